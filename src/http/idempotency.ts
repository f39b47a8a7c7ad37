import type { MiddlewareHandler } from "hono";
import { createDb } from "../db/client";
import type { AppEnv } from "../env";
import { complete, release, reserve } from "../features/system/idempotency.service";
import { openText, sealText, sha256Hex } from "../lib/crypto";
import { BadRequest, Conflict } from "../lib/errors";
import { DAY_MS } from "../lib/time";
import { clientAddress, isAdminRequest } from "./auth";

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

/**
 * `Idempotency-Key` on creating POSTs: the same key and body within 24 h returns the first
 * response (with `Idempotent-Replayed: true`); the same key with another body is 409
 * `idempotency_key_reused`; a retry while the first is still running is 409
 * `idempotency_request_in_progress`. Stored responses can hold a new API key, so they are
 * sealed with AES-GCM under a key derived from the Idempotency-Key itself, which is never
 * stored: the database alone cannot reveal them.
 */
export const idempotent: MiddlewareHandler<AppEnv> = async (c, next) => {
  const key = c.req.header("Idempotency-Key");
  if (c.req.method !== "POST" || key === undefined) return next();
  if (!KEY_PATTERN.test(key)) {
    throw new BadRequest("invalid_idempotency_key", "Idempotency-Key must be 1–255 visible ASCII characters.");
  }
  const db = createDb(c.env.DB);
  // Scoped to the caller: the API key, the operator, or an anonymous client address. A replay
  // can therefore never hand a response to anyone but the caller who made the first request.
  const auth = c.get("auth");
  const scope = auth ? `key:${auth.key.id}` : isAdminRequest(c) ? "admin" : `public:${clientAddress(c)}`;
  const body = canonicalJson(await c.req.text());
  const path = new URL(c.req.url).pathname;
  const now = Date.now();
  const reservation = await reserve(db, {
    lookup: await sha256Hex(`${scope}\n${key}`),
    accountId: auth?.account.id ?? null,
    method: c.req.method,
    path,
    requestHash: await sha256Hex(`${c.req.method} ${path}\n${body}`),
    now,
    ttlMs: DAY_MS,
  });
  const info = `mailbot idempotency ${scope}`;
  if (reservation.state === "mismatch") {
    throw new Conflict("idempotency_key_reused", "This Idempotency-Key was used with a different request.");
  }
  if (reservation.state === "in_progress") {
    throw new Conflict("idempotency_request_in_progress", "A request with this Idempotency-Key is still in progress.");
  }
  if (reservation.state === "replay") {
    const stored = JSON.parse(await openText(key, info, reservation.sealed)) as { body: string };
    return new Response(stored.body, {
      status: reservation.statusCode,
      headers: { "Content-Type": "application/json; charset=utf-8", "Idempotent-Replayed": "true" },
    });
  }
  try {
    await next();
  } catch (err) {
    await release(db, reservation.id);
    throw err;
  }
  // Server errors are not remembered: the client may retry them with the same key.
  if (c.res.status >= 500) {
    await release(db, reservation.id);
    return;
  }
  const text = await c.res.clone().text();
  await complete(db, reservation.id, c.res.status, await sealText(key, info, JSON.stringify({ body: text })));
};
