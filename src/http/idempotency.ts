import type { MiddlewareHandler } from "hono";
import { complete, release, reserve } from "../features/idempotency/idempotency.service";
import type { BaseContext } from "../lib/context";
import { openText, sealText, sha256Hex } from "../lib/crypto";
import { BadRequest, Conflict } from "../lib/errors";
import { DAY_MS } from "../lib/time";
import type { AppEnv } from "./app-env";
import { clientAddress, isAdminRequest } from "./auth";
import { requestContext } from "./context";

/** Same JSON, same hash: key order and whitespace do not make a retry a different request. */
function canonicalJson(text: string): string {
  const sort = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(sort)
      : v && typeof v === "object"
        ? Object.fromEntries(
            Object.keys(v)
              .sort()
              .map((k) => [k, sort((v as Record<string, unknown>)[k])]),
          )
        : v;
  try {
    return JSON.stringify(sort(JSON.parse(text)));
  } catch {
    return text;
  }
}

const KEY_PATTERN = /^[\x21-\x7e]{1,255}$/;

/** A creating request as the idempotency store sees it (HTTP POST, or the MCP tool doing the same). */
export interface IdempotentRequest {
  /** The client's key (Idempotency-Key header, or a tool's `idempotency_key`). */
  key: string;
  /** Who may replay it: `key:<api key id>`, `admin` or `public:<client address>`. */
  scope: string;
  accountId: string | null;
  method: string;
  /** The HTTP path of the operation (MCP tools name the route they stand for). */
  path: string;
  /** The request body as sent; canonicalised before hashing. */
  body: string;
}

/** A response as stored: status, body text (the `{ data }` or `{ error }` envelope) and the headers replays need. */
export interface StoredResponse {
  status: number;
  body: string;
  headers?: Record<string, string>;
}

/**
 * Headers a replay must carry to mean what the first response meant (where the resource is,
 * when to come back, the reputation warnings about it). Rate-limit counters and request ids
 * describe the request that carries them, so they are the replay's own.
 */
const REPLAYED_HEADERS = [
  "location",
  "retry-after",
  "x-mailbot-warning",
  "x-mailbot-bounce-rate",
  "x-mailbot-complaint-rate",
];

/** A 429 says "not now": a retry with the same key once the limit frees must really be tried. */
function isRemembered(status: number): boolean {
  return status < 500 && status !== 429;
}

/**
 * The seal's secret: the client's key (never stored) and a server secret (never in D1), so
 * neither a database dump nor the client key alone opens a stored response (which may hold a
 * new API key). IDEMPOTENCY_SECRET, else ADMIN_TOKEN; records sealed before this (no `v2.`)
 * open with the client key only until they expire (24 h).
 */
function sealSecret(ctx: BaseContext, clientKey: string): string {
  const server = ctx.env.IDEMPOTENCY_SECRET ?? ctx.env.ADMIN_TOKEN ?? "";
  return `${server}\n${clientKey}`;
}
const SEAL_V2 = "v2.";

/**
 * The idempotency rule shared by every transport: the same key and body within 24 h returns
 * the first response (`replayed: true`, with its Location, Retry-After and warning headers);
 * the same key with another body is 409 `idempotency_key_reused`; a retry while the first is
 * still running is 409 `idempotency_request_in_progress`. Server errors (>= 500, or `run`
 * throwing) and 429s are not remembered. Stored responses can hold a new API key, so they are
 * sealed with AES-GCM under a key derived from the client's key (never stored) and a server
 * secret (never in D1): neither the database alone nor the client key alone reveals them.
 */
export async function runIdempotent(
  ctx: BaseContext,
  req: IdempotentRequest,
  run: () => Promise<StoredResponse>,
): Promise<StoredResponse & { replayed: boolean }> {
  if (!KEY_PATTERN.test(req.key)) {
    throw new BadRequest("invalid_idempotency_key", "Idempotency-Key must be 1–255 visible ASCII characters.");
  }
  const body = canonicalJson(req.body);
  const { db } = ctx;
  const reservation = await reserve(db, {
    lookup: await sha256Hex(`${req.scope}\n${req.key}`),
    accountId: req.accountId,
    method: req.method,
    path: req.path,
    requestHash: await sha256Hex(`${req.method} ${req.path}\n${body}`),
    now: ctx.now(),
    ttlMs: DAY_MS,
  });
  const info = `mailbot idempotency ${req.scope}`;
  if (reservation.state === "mismatch") {
    throw new Conflict("idempotency_key_reused", "This Idempotency-Key was used with a different request.");
  }
  if (reservation.state === "in_progress") {
    throw new Conflict("idempotency_request_in_progress", "A request with this Idempotency-Key is still in progress.");
  }
  if (reservation.state === "replay") {
    const sealed = reservation.sealed;
    const plain = sealed.startsWith(SEAL_V2)
      ? await openText(sealSecret(ctx, req.key), info, sealed.slice(SEAL_V2.length))
      : await openText(req.key, info, sealed);
    const stored = JSON.parse(plain) as { body: string; headers?: Record<string, string> };
    return { status: reservation.statusCode, body: stored.body, headers: stored.headers ?? {}, replayed: true };
  }
  let response: StoredResponse;
  try {
    response = await run();
  } catch (err) {
    await release(db, reservation.id);
    throw err;
  }
  // Server errors and 429s are not remembered: the client may retry them with the same key.
  if (!isRemembered(response.status)) {
    await release(db, reservation.id);
  } else {
    const sealed = await sealText(
      sealSecret(ctx, req.key),
      info,
      JSON.stringify({ body: response.body, headers: response.headers ?? {} }),
    );
    await complete(db, reservation.id, response.status, `${SEAL_V2}${sealed}`);
  }
  return { ...response, replayed: false };
}

/** `Idempotency-Key` on creating POSTs (see runIdempotent); a replay carries `Idempotent-Replayed: true`. */
export const idempotent: MiddlewareHandler<AppEnv> = async (c, next) => {
  const key = c.req.header("Idempotency-Key");
  if (c.req.method !== "POST" || key === undefined) return next();
  // Scoped to the caller: the API key, the operator, or an anonymous client address. A replay
  // can therefore never hand a response to anyone but the caller who made the first request.
  const auth = c.get("auth");
  const scope = auth ? `key:${auth.key.id}` : isAdminRequest(c) ? "admin" : `public:${clientAddress(c)}`;
  const result = await runIdempotent(
    requestContext(c),
    {
      key,
      scope,
      accountId: auth?.account.id ?? null,
      method: c.req.method,
      path: new URL(c.req.url).pathname,
      body: await c.req.text(),
    },
    async () => {
      await next();
      const headers: Record<string, string> = {};
      for (const name of REPLAYED_HEADERS) {
        const value = c.res.headers.get(name);
        if (value !== null) headers[name] = value;
      }
      return { status: c.res.status, body: c.res.status >= 500 ? "" : await c.res.clone().text(), headers };
    },
  );
  if (result.replayed) {
    return new Response(result.body, {
      status: result.status,
      headers: {
        ...result.headers,
        "Content-Type": "application/json; charset=utf-8",
        "Idempotent-Replayed": "true",
      },
    });
  }
};
