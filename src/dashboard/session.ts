import { type Context, Hono, type MiddlewareHandler } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { config } from "../config";
import type { AppEnv, AuthState } from "../http/app-env";
import { clientAddress, requireAdmin, requireApiKey } from "../http/auth";
import { requestContext } from "../http/context";
import { Forbidden } from "../lib/errors";
import { type DashboardSession, endSession, findSession, openSession } from "./sessions.service";

export const COOKIE = "mb_dash";

export type DashEnv = AppEnv & { Variables: AppEnv["Variables"] & { session?: DashboardSession } };

/**
 * Runs the API's own authentication middleware (requireApiKey or requireAdmin) on the secret
 * typed into the sign-in form, so the dashboard has no second copy of key verification, its
 * Argon2 cache, the failure throttling, suspension or the per-key rate limit.
 */
async function probe(c: Context<DashEnv>, guard: MiddlewareHandler<AppEnv>, secret: string): Promise<AuthState | null> {
  const app = new Hono<AppEnv>();
  let auth: AuthState | null = null;
  let failure: unknown = null;
  app.use("*", async (pc, next) => {
    pc.set("requestId", c.get("requestId"));
    await next();
  });
  app.get("/", guard, (pc) => {
    auth = pc.get("auth") ?? null;
    return pc.body(null, 204);
  });
  app.onError((err, pc) => {
    failure = err;
    return pc.body(null, 500);
  });
  await app.request(
    "/",
    { headers: { Authorization: `Bearer ${secret}`, "CF-Connecting-IP": clientAddress(c as Context<AppEnv>) } },
    c.env,
    c.executionCtx,
  );
  if (failure) throw failure;
  return auth;
}

function setSessionCookie(c: Context<DashEnv>, token: string, expiresAt: number) {
  setCookie(c, COOKIE, token, {
    path: "/dashboard",
    httpOnly: true,
    sameSite: "Strict",
    // Secure everywhere but local development (wrangler dev serves plain http on 127.0.0.1).
    secure: !config(c.env).isDevelopment,
    expires: new Date(expiresAt),
  });
}

/** API key → session. Throws the API's own errors (invalid_api_key, too_many_failed_attempts, …). */
export async function signInWithKey(c: Context<DashEnv>, key: string): Promise<void> {
  const auth = await probe(c, requireApiKey, key.trim());
  if (!auth) throw new Forbidden("invalid_api_key", "Invalid API key.");
  const { token, expiresAt } = await openSession(requestContext(c as Context<AppEnv>), {
    kind: "account",
    accountId: auth.account.id,
    keyId: auth.key.id,
  });
  setSessionCookie(c, token, expiresAt);
}

/** ADMIN_TOKEN → operator session (requireAdmin: constant-time compare, throttled failures). */
export async function signInAsOperator(c: Context<DashEnv>, adminToken: string): Promise<void> {
  await probe(c, requireAdmin, adminToken.trim());
  const { token, expiresAt } = await openSession(requestContext(c as Context<AppEnv>), { kind: "operator" });
  setSessionCookie(c, token, expiresAt);
}

export async function signOut(c: Context<DashEnv>): Promise<void> {
  const token = getCookie(c, COOKIE);
  if (token) await endSession(requestContext(c as Context<AppEnv>), token);
  deleteCookie(c, COOKIE, { path: "/dashboard", secure: !config(c.env).isDevelopment });
}

/**
 * Loads the session and, for an account session, leaves the same AuthState the API key
 * middleware leaves, so the dashboard calls requireScope/requireFullAccess/serviceContext of
 * src/http exactly like the routes do: same scopes, same inbox restriction. The actor is
 * `dashboard` (with the key's id), so the audit log tells console actions apart.
 */
export const loadSession: MiddlewareHandler<DashEnv> = async (c, next) => {
  const token = getCookie(c, COOKIE);
  if (token) {
    const session = await findSession(requestContext(c as Context<AppEnv>), token);
    if (session) {
      c.set("session", session);
      if (session.kind === "account") {
        c.set("auth", {
          account: session.account,
          key: session.key,
          scopes: session.key.scopes,
          inboxIds: session.key.inboxIds ?? null,
        });
        c.set("actor", { type: "dashboard", id: session.key.id });
      } else {
        c.set("actor", { type: "dashboard", id: null });
      }
    }
  }
  await next();
};

/**
 * CSRF: the cookie is SameSite=Strict, and every state-changing request must also come from a
 * page of this origin (Origin header, or Sec-Fetch-Site when a browser leaves Origin out).
 * A request with neither is refused: every browser that matters sends one of them.
 */
export function sameOrigin(c: Context<DashEnv>): boolean {
  const origin = c.req.header("Origin");
  const expected = new URL(c.req.url).origin;
  if (origin && origin !== "null") return origin === expected;
  // "null" is what a browser sends under some referrer policies; Sec-Fetch-Site cannot be forged by a page.
  return c.req.header("Sec-Fetch-Site") === "same-origin";
}
