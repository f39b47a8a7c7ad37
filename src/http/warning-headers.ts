import type { MiddlewareHandler } from "hono";
import { inboxOfMessage } from "../features/messages/messages.service";
import { warningHeaders } from "../features/reputation/reputation.service";
import { benchHooks } from "../lib/bench";
import { log } from "../lib/log";
import type { AppEnv } from "./app-env";
import { serviceContext } from "./context";

const INBOX_PATH = /^\/v1\/inboxes\/(inbox_[0-9a-z]{26})(?:\/|$)/;
/** The reputation route asks the counter itself and sets the same headers from that one answer. */
const REPUTATION_PATH = /^\/v1\/inboxes\/inbox_[0-9a-z]{26}\/reputation$/;
const MESSAGE_PATH = /^\/v1\/messages\/(msg_[0-9a-z]{26})\/(?:reply|forward)$/;

/**
 * Adds API.md's reputation warning headers to every response about an inbox (its routes, and
 * reply/forward, which name a message). The counter is asked while the handler runs, not after,
 * so a send waits for it only if it is slower than the send itself. Another account's inbox gets
 * nothing: the counter answers only for the account whose inputs it counted, and a key restricted
 * to other inboxes is not told either.
 */
export const reputationWarnings: MiddlewareHandler<AppEnv> = async (c, next) => {
  const path = c.req.path;
  const inboxMatch = INBOX_PATH.exec(path)?.[1];
  const messageMatch = inboxMatch ? undefined : MESSAGE_PATH.exec(path)?.[1];
  const auth = c.get("auth");
  if ((!inboxMatch && !messageMatch) || !auth || REPUTATION_PATH.test(path)) return next();
  const started = Date.now();
  const t0 = performance.now();
  let lookupMs = 0;
  const lookup = (async () => {
    let inboxId = inboxMatch;
    if (messageMatch) {
      inboxId = (await inboxOfMessage(serviceContext(c), messageMatch)) ?? undefined;
    }
    if (!inboxId || (auth.inboxIds && !auth.inboxIds.includes(inboxId))) return null;
    return warningHeaders(serviceContext(c), inboxId, started);
  })()
    .finally(() => {
      lookupMs = performance.now() - t0;
    })
    .catch((err: unknown) => {
      // Warnings are advice: a counter that cannot answer must not fail the request it rides on.
      log.error("reputation warning lookup failed", { error: String(err) });
      return null;
    });
  await next();
  const handled = performance.now();
  const headers = await lookup;
  // What the check cost and how much of it the response waited for (it runs beside the
  // handler): the numbers bench/reputation.mjs reports.
  const waitMs = Math.max(0, performance.now() - handled);
  // Timings are for the bench (run under `wrangler dev`), never shown to production clients.
  const add: [string, string][] = [
    ...(benchHooks(c.env).serverTiming
      ? [
          ["Server-Timing", `reputation;dur=${lookupMs.toFixed(2)}, reputation-wait;dur=${waitMs.toFixed(2)}`] as [
            string,
            string,
          ],
        ]
      : []),
    ...Object.entries(headers ?? {}),
  ];
  if (add.length === 0) return;
  try {
    for (const [name, value] of add) c.res.headers.append(name, value);
  } catch {
    // A response with immutable headers (one passed through from a fetch): copy it once.
    c.res = new Response(c.res.body, c.res);
    for (const [name, value] of add) c.res.headers.append(name, value);
  }
};
