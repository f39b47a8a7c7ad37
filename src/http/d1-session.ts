import type { Context, MiddlewareHandler } from "hono";
import { generateCookie, getCookie } from "hono/cookie";
import { partialConfig } from "../config";
import type { AppEnv } from "./app-env";

/** The header a response carries its D1 bookmark in, and a request hands it back in (API.md "Scale"). */
export const BOOKMARK_HEADER = "X-Mailbot-Bookmark";
/** D1 bookmarks are dash-separated hex (`00000000-00000005-00000000-…`); anything else is ignored. */
const BOOKMARK = /^[0-9a-f]{1,16}(?:-[0-9a-f]{1,64}){1,8}$/i;
/**
 * The web console's bookmark travels in a cookie (a browser does not hand a response header back
 * on its next request): a form post answers with a redirect, and the page it leads to must show
 * what the post wrote, whichever replica serves it.
 */
export const BOOKMARK_COOKIE = "mb_bookmark";
const DASHBOARD = /^\/dashboard(?:\/|$)/;

/**
 * D1 read replication (Sessions API). Every request runs its queries in one session:
 * - a read with the bookmark of an earlier response, on any replica at least as new as that
 *   bookmark, so a client reads its own writes wherever its next request lands;
 * - without one, a read (GET, HEAD) starts on the nearest replica, and a write starts on the
 *   primary, so the checks it makes before writing (limits, idempotency, state) read the newest.
 * A malformed bookmark is treated as none on the primary side ("first-primary"): never staler than
 * what the client asked for. The response carries the session's bookmark after its last query.
 */
export const d1Session: MiddlewareHandler<AppEnv> = async (c, next) => {
  const console_ = DASHBOARD.test(c.req.path);
  const offered = (c.req.header(BOOKMARK_HEADER) ?? (console_ ? getCookie(c, BOOKMARK_COOKIE) : undefined))?.trim();
  const read = c.req.method === "GET" || c.req.method === "HEAD";
  // A write always starts on the primary, whatever bookmark it carries: a client-chosen (or
  // forged, arbitrarily old) bookmark must not move a write's checks onto a lagging replica, and
  // the primary is at least as new as any bookmark, so read-your-writes still holds.
  const constraint = !read
    ? "first-primary"
    : offered && BOOKMARK.test(offered)
      ? offered
      : offered
        ? "first-primary"
        : "first-unconstrained";
  const session = c.env.DB.withSession(constraint);
  c.set("d1Session", session);
  try {
    await next();
  } finally {
    const bookmark = session.getBookmark();
    if (bookmark) c.res.headers.set(BOOKMARK_HEADER, bookmark);
    if (console_) consoleCookie(c, offered, bookmark, !c.req.header(BOOKMARK_HEADER));
  }
};

/**
 * The console's cookie moves forward only (two tabs must not set an older bookmark over a newer
 * one), and is dropped when a request that read it failed: a planted, well-formed but bogus
 * value must not keep every console page failing for the rest of the browser session.
 */
function consoleCookie(c: Context<AppEnv>, offered: string | undefined, bookmark: string | null, fromCookie: boolean) {
  const options = {
    path: "/dashboard",
    httpOnly: true,
    sameSite: "Strict" as const,
    // Secure everywhere but local development (wrangler dev serves plain http).
    secure: !safeIsDevelopment(c.env),
  };
  let value: string | null = null;
  if (fromCookie && offered && c.res.status >= 500) {
    value = generateCookie(BOOKMARK_COOKIE, "", { ...options, maxAge: 0 });
  } else if (bookmark && (!offered || !BOOKMARK.test(offered) || bookmark.toLowerCase() > offered.toLowerCase())) {
    value = generateCookie(BOOKMARK_COOKIE, bookmark, options);
  }
  if (!value) return;
  try {
    c.res.headers.append("Set-Cookie", value);
  } catch {
    // A response with immutable headers (one passed through from a fetch): copy it once.
    c.res = new Response(c.res.body, c.res);
    c.res.headers.append("Set-Cookie", value);
  }
}

function safeIsDevelopment(env: AppEnv["Bindings"]): boolean {
  try {
    return partialConfig(env).isDevelopment;
  } catch {
    return env.ENVIRONMENT === "development";
  }
}
