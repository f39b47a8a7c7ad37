import type { Context, MiddlewareHandler } from "hono";
import { config } from "../config";
import { rateLimiter } from "../durable-objects/rate-limiter.client";
import {
  cachedKey,
  forgetVerified,
  KEY_PREFIX_LENGTH,
  keyStateFromDb,
  refreshStatus,
  touchKey,
  verifyKey,
} from "../features/api-keys/key-auth";
import { guardRequest } from "../features/api-keys/key-guard";
import { createContext, SYSTEM_ACTOR } from "../lib/context";
import { safeEqual } from "../lib/crypto";
import { Forbidden, RateLimited, Unauthorized } from "../lib/errors";
import { tierLimits } from "../lib/tiers";
import type { AppEnv, AuthState } from "./app-env";
import { rateLimitHeaders } from "./errors";

/** Failed attempts allowed per client address and per key prefix, per minute, before 429. */
const FAILURES_PER_CLIENT = 20;
const FAILURES_PER_PREFIX = 10;
const FAILURE_RULE_WINDOW_MS = 60_000;

/** The caller's address as Cloudflare reports it ("local" under wrangler dev and in tests). */
export function clientAddress(c: Context<AppEnv>): string {
  return c.req.header("CF-Connecting-IP") ?? "local";
}

function bearer(c: Context<AppEnv>): string | null {
  const header = c.req.header("Authorization");
  if (!header) return webSocketKey(c);
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1] ?? null;
}

/** The subprotocol a browser offers next to its key; the server answers with it (browsers require one back). */
export const WS_PROTOCOL = "mailbot";

/** The protocols a WebSocket upgrade offers (`Sec-WebSocket-Protocol`), or none for other requests. */
export function offeredProtocols(c: Context<AppEnv>): string[] {
  if (c.req.header("Upgrade")?.toLowerCase() !== "websocket") return [];
  return (c.req.header("Sec-WebSocket-Protocol") ?? "")
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean);
}

/**
 * Browsers cannot set Authorization on a WebSocket, so an upgrade may carry the key as one of its
 * offered subprotocols (`new WebSocket(url, ["mailbot", key])`). Only upgrades: a key in that
 * header of an ordinary request is ignored.
 */
function webSocketKey(c: Context<AppEnv>): string | null {
  return offeredProtocols(c).find((p) => p.startsWith("mb_")) ?? null;
}

/**
 * Hashes allowed per minute for a prefix whose failure limit is spent: a correct key still gets
 * through, so guesses with a victim's (public) prefix cannot lock the real key out, and the
 * Argon2 work spent on that prefix stays bounded however many clients guess.
 */
const HASHES_PER_HOT_PREFIX = 30;

async function refuseIfOver(decisions: { allowed: boolean; retryAfterMs: number }[]): Promise<void> {
  const refused = decisions.find((d) => !d.allowed);
  if (refused) {
    throw new RateLimited(
      "too_many_failed_attempts",
      "Too many failed authentication attempts. Wait before trying again.",
      refused.retryAfterMs / 1000,
    );
  }
}

/** Refuses (429) a client over its failure limit; checked before any D1 read or hashing. */
async function checkClientFailures(c: Context<AppEnv>): Promise<void> {
  await refuseIfOver([
    await rateLimiter(c.env, `authfail:client:${clientAddress(c)}`).hit(
      { limit: FAILURES_PER_CLIENT, windowMs: FAILURE_RULE_WINDOW_MS },
      Date.now(),
      true,
    ),
  ]);
}

/** Counts one failure of the client (and of the key prefix, for a hash that did not match). */
async function recordFailure(c: Context<AppEnv>, prefix: string | null): Promise<void> {
  const now = Date.now();
  const subjects: [string, number][] = [[`authfail:client:${clientAddress(c)}`, FAILURES_PER_CLIENT]];
  if (prefix) subjects.push([`authfail:prefix:${prefix}`, FAILURES_PER_PREFIX]);
  await Promise.all(
    subjects.map(([subject, limit]) =>
      rateLimiter(c.env, subject).hit({ limit, windowMs: FAILURE_RULE_WINDOW_MS }, now),
    ),
  );
}

/**
 * Runs just before Argon2: a prefix over its failure limit does not refuse outright (the prefix
 * is public, so that would let anyone lock a key out); it only limits how many hashes that prefix
 * may cost per minute, and only failures are counted.
 */
async function gateHashing(c: Context<AppEnv>, prefix: string | null): Promise<void> {
  if (!prefix) return;
  const now = Date.now();
  const failures = await rateLimiter(c.env, `authfail:prefix:${prefix}`).hit(
    { limit: FAILURES_PER_PREFIX, windowMs: FAILURE_RULE_WINDOW_MS },
    now,
    true,
  );
  if (failures.allowed) return;
  await refuseIfOver([
    await rateLimiter(c.env, `authhash:prefix:${prefix}`).hit(
      { limit: HASHES_PER_HOT_PREFIX, windowMs: FAILURE_RULE_WINDOW_MS },
      now,
    ),
  ]);
}

/**
 * Bearer `mb_…` authentication, then the per-key rate limit. A key verified in this isolate
 * within the minute costs no D1 read and, while it is in use, no Durable Object round trip: the
 * rate limit is decided in the isolate and its guard object (revocation, suspension, tier) is
 * synced in the background, never more than 1.5 s behind (features/api-keys/key-guard.ts). Unknown prefixes are refused without running Argon2, and repeated
 * failures per client and per prefix are throttled before any hashing, so nobody can make the
 * Worker hash in a loop.
 */
export const requireApiKey: MiddlewareHandler<AppEnv> = async (c, next) => {
  const token = bearer(c);
  if (!token) throw new Unauthorized("Missing API key. Send Authorization: Bearer mb_…", "missing_api_key");
  // Keys are looked up on the primary, not the request's replica session: a key created a moment
  // ago (on the primary) must work on its first request wherever that lands. Only cache misses
  // read D1 here, so this costs the primary about one read per key per isolate per minute.
  const { db } = createContext(c.env, { actor: SYSTEM_ACTOR, requestId: c.get("requestId") ?? null });
  const now = Date.now();
  const prefix = token.startsWith("mb_") ? token.slice(0, KEY_PREFIX_LENGTH) : null;

  const { digest, hit } = await cachedKey(token, now);
  let found = hit ? await refreshStatus(db, digest, hit) : null;
  if (!found) {
    // A client over its failure limit is refused before its key costs a D1 read or a hash.
    // Every failure counts for the client (unknown prefixes too: each is a D1 read); only a hash
    // that did not match counts for the prefix, and a hot prefix still lets a correct key in.
    await checkClientFailures(c);
    const result = await verifyKey(db, token, digest, now, () => gateHashing(c, prefix));
    if (!result.ok) {
      await recordFailure(c, result.reason === "mismatch" ? prefix : null);
      throw new Unauthorized("Invalid API key.", "invalid_api_key");
    }
    found = result;
  }
  // Checked on every path, cache hits included (a non-active account's cached row was just
  // re-read from D1); for active ones the guard object carries suspension and revocation.
  if (found.account.status === "suspended") throw new Forbidden("account_suspended", "This account is suspended.");
  if (found.account.status !== "active") throw new Unauthorized("Invalid API key.", "invalid_api_key");
  const { key } = found;

  const tiers = config(c.env).tiers;
  const guard = await guardRequest(
    c.env,
    key.id,
    (tier) => {
      const limits = tierLimits(tiers, tier ?? found.account.tier);
      return { limit: limits.requests_per_minute, windowMs: 60_000, burst: limits.burst, burstWindowMs: 1_000 };
    },
    now,
    () => keyStateFromDb(db, key.id),
  );
  const { decision } = guard;
  // A tier changed since the key was verified (pushed to its guard) applies at once.
  const account =
    guard.tier && guard.tier !== found.account.tier ? { ...found.account, tier: guard.tier } : found.account;
  if (decision.blocked === "suspended") throw new Forbidden("account_suspended", "This account is suspended.");
  if (decision.blocked !== null) {
    forgetVerified(digest);
    throw new Unauthorized("Invalid API key.", "invalid_api_key");
  }
  if (!decision.allowed) {
    throw new RateLimited(
      "rate_limited",
      "Rate limit exceeded for this API key.",
      decision.retryAfterMs / 1000,
      decision,
    );
  }

  const headers = rateLimitHeaders(decision);
  const auth: AuthState = { account, key, scopes: key.scopes, inboxIds: key.inboxIds ?? null };
  c.set("auth", auth);
  c.set("actor", { type: "api_key", id: key.id });
  c.executionCtx.waitUntil(touchKey(db, key, now).catch(() => undefined));
  try {
    await next();
  } finally {
    for (const [k, v] of Object.entries(headers)) c.res.headers.set(k, v);
  }
};

/** Operator authentication with the ADMIN_TOKEN secret (constant-time compare). */
export const requireAdmin: MiddlewareHandler<AppEnv> = async (c, next) => {
  const token = bearer(c);
  const expected = c.env.ADMIN_TOKEN;
  if (!expected) throw new Forbidden("admin_disabled", "Operator endpoints are disabled: ADMIN_TOKEN is not set.");
  if (!token) throw new Unauthorized("Missing operator token.", "missing_api_key");
  // Throttle first, compare after: a client over its limit learns nothing, not even a right guess.
  await checkClientFailures(c);
  if (!safeEqual(token, expected)) {
    await recordFailure(c, null);
    throw new Unauthorized("Invalid operator token.", "invalid_admin_token");
  }
  c.set("actor", { type: "admin", id: null });
  await next();
};

/**
 * Whether the request carries the operator token, for routes open to the public where the
 * operator may do more (closed registration). A bearer that is not the token counts as a failed
 * attempt and a throttled client is refused before the compare, so the route is no oracle.
 */
export async function checkAdminBearer(c: Context<AppEnv>): Promise<boolean> {
  const token = bearer(c);
  if (!token || token.startsWith("mb_")) return false;
  if (!c.env.ADMIN_TOKEN) return false;
  await checkClientFailures(c);
  if (safeEqual(token, c.env.ADMIN_TOKEN)) return true;
  await recordFailure(c, null);
  return false;
}

/** True when the request carries the operator token (closed registration). */
export function isAdminRequest(c: Context<AppEnv>): boolean {
  const token = bearer(c);
  return Boolean(token && c.env.ADMIN_TOKEN && safeEqual(token, c.env.ADMIN_TOKEN));
}

export type Scope = "read" | "send" | "manage" | "full";

/** Throws 403 unless the key carries `full` or the scope named. */
export function requireScope(c: Context<AppEnv>, scope: Scope): AuthState {
  const auth = c.get("auth");
  if (!auth) throw new Unauthorized();
  return assertScope(auth, scope);
}

/** The scope rule itself, shared by routes and MCP tools: `full` or the scope named, else 403. */
export function assertScope(auth: AuthState, scope: Scope): AuthState {
  if (!auth.scopes.includes("full") && !auth.scopes.includes(scope)) {
    throw new Forbidden("insufficient_scope", `This API key lacks the "${scope}" scope.`, {
      required: scope,
      scopes: auth.scopes,
    });
  }
  return auth;
}

/** Account-wide operations (keys, the account itself) need an unrestricted `full` key. */
export function requireFullAccess(c: Context<AppEnv>): AuthState {
  const auth = requireScope(c, "full");
  if (auth.inboxIds !== null) {
    throw new Forbidden("insufficient_scope", "A key restricted to inboxes cannot manage the account.", {
      required: "full",
    });
  }
  return auth;
}
