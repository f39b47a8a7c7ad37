import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "./app-env";

/** The header a response carries its D1 bookmark in, and a request hands it back in (API.md "Scale"). */
export const BOOKMARK_HEADER = "X-Mailbot-Bookmark";
/** D1 bookmarks are dash-separated hex (`00000000-00000005-00000000-…`); anything else is ignored. */
const BOOKMARK = /^[0-9a-f]{1,16}(?:-[0-9a-f]{1,64}){1,8}$/i;

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
  const offered = c.req.header(BOOKMARK_HEADER)?.trim();
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
  }
};
