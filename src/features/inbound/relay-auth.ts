/**
 * Authentication of the inbound relay (`POST /webhooks/inbound/*`): the shared secret, the
 * signature headers, an HMAC computed while the body streams in, the per-client throttle of
 * failed signatures, and the signature claims that stop a signed request from being replayed or
 * pointed at another recipient.
 */
import { eq, lt } from "drizzle-orm";
import { relaySignatures } from "../../db/schema";
import { rateLimiter } from "../../durable-objects/rate-limiter.client";
import type { Bindings } from "../../env";
import type { BaseContext } from "../../lib/context";
import { safeEqual, sha256Hex, toHex } from "../../lib/crypto";
import { BadRequest, RateLimited, ServiceUnavailable, Unauthorized } from "../../lib/errors";
import { bareAddress } from "../../mail/address";
import { inboundTooLarge } from "./inbound.service";

/** Largest clock difference accepted between the relay's timestamp and ours. */
export const MAX_SKEW_SECONDS = 300;

/** Failed relay signatures allowed per client address per minute; beyond, 429 before any body is read. */
export const RELAY_FAILURES_PER_CLIENT = 10;
const RELAY_FAILURE_WINDOW_MS = 60_000;

/**
 * A parsed `X-Mailbot-Signature`: `sha256=<hex>` (v1: timestamp and body) or `v2=<hex>`
 * (timestamp, `to`, `from` and body, so one message relayed to several recipients is signed once
 * per recipient and a captured request cannot be pointed elsewhere).
 */
export interface RelaySignature {
  version: 1 | 2;
  hex: string;
  /** The header as sent, normalised: the claim key. */
  normalized: string;
}

/** The relay endpoints' HMAC key; without one they are off (503), never open. */
export function inboundSecret(env: Bindings): string {
  if (!env.INBOUND_SECRET) {
    throw new ServiceUnavailable(
      "inbound_not_configured",
      "This deployment has no INBOUND_SECRET; the relay endpoints are off.",
    );
  }
  return env.INBOUND_SECRET;
}

/**
 * Both headers present, a well-formed signature, and a timestamp within 5 minutes. A missing
 * header says it is required; one that is present but not of the documented form says so
 * (`malformed_signature`), so a relay author can tell a typo from a forgotten header.
 */
export function checkHeaders(
  timestamp: string | undefined,
  signature: string | undefined,
  opts: { v2?: boolean } = {},
): RelaySignature {
  if (!timestamp || !signature) {
    throw new Unauthorized(
      `X-Mailbot-Timestamp and X-Mailbot-Signature (sha256=<64 hex>${opts.v2 ? " or v2=<64 hex>" : ""}) are required.`,
      "invalid_signature",
    );
  }
  const m = /^(sha256|v2)=([0-9a-f]{64})$/i.exec(signature.trim());
  const version = m?.[1]?.toLowerCase() === "v2" ? 2 : 1;
  if (!m?.[2] || (version === 2 && !opts.v2)) {
    throw new Unauthorized(
      `X-Mailbot-Signature is malformed: expected sha256=<64 hex digits>${opts.v2 ? " or v2=<64 hex digits>" : ""}.`,
      "malformed_signature",
    );
  }
  if (!/^\d{1,12}$/.test(timestamp)) {
    throw new Unauthorized("X-Mailbot-Timestamp is malformed: expected unix seconds.", "malformed_signature");
  }
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > MAX_SKEW_SECONDS) {
    throw new Unauthorized(
      "X-Mailbot-Timestamp is more than 5 minutes away from the server's clock.",
      "timestamp_out_of_range",
    );
  }
  const hex = m[2].toLowerCase();
  return { version, hex, normalized: `${version === 2 ? "v2" : "sha256"}=${hex}` };
}

/** What a signature covers before the body: `timestamp.` (v1) or `timestamp.to.from.` (v2). */
export function signedPrefix(sig: RelaySignature, timestamp: string, to: string, from: string): string {
  return sig.version === 2 ? `${timestamp}.${to}.${from}.` : `${timestamp}.`;
}

/**
 * Refuses (429) a client that sent too many bad signatures this minute, before its body is read:
 * a stream of 25 MiB forgeries costs one Durable Object call each, not 25 MiB of reading.
 */
export async function throttleRelayFailures(env: Bindings, client: string, record: boolean): Promise<void> {
  const decision = await rateLimiter(env, `relayfail:client:${client}`).hit(
    { limit: RELAY_FAILURES_PER_CLIENT, windowMs: RELAY_FAILURE_WINDOW_MS },
    Date.now(),
    !record,
  );
  if (!decision.allowed && !record) {
    throw new RateLimited(
      "too_many_failed_attempts",
      "Too many requests with an invalid signature from this client. Wait before trying again.",
      decision.retryAfterMs / 1000,
    );
  }
}

/** The HMAC block size of SHA-256. */
const BLOCK = 64;

/**
 * Reads a request body while computing its HMAC-SHA256 (RFC 2104 over `crypto.DigestStream`, so
 * the body is hashed as it arrives and never copied whole), refusing it (413) past `limit` bytes.
 * Returns the chunks as they came (the only copy held) once the signature matches; a mismatch
 * throws 401 `invalid_signature` and the chunks are dropped with it.
 */
export async function readVerified(
  stream: ReadableStream<Uint8Array> | null,
  limit: number,
  secret: string,
  prefix: string,
  expectedHex: string,
): Promise<Uint8Array[]> {
  let key = new TextEncoder().encode(secret);
  if (key.byteLength > BLOCK) key = new Uint8Array(await crypto.subtle.digest("SHA-256", key));
  const ipad = new Uint8Array(BLOCK);
  const opad = new Uint8Array(BLOCK);
  for (let i = 0; i < BLOCK; i++) {
    ipad[i] = (key[i] ?? 0) ^ 0x36;
    opad[i] = (key[i] ?? 0) ^ 0x5c;
  }
  const inner = new crypto.DigestStream("SHA-256");
  const writer = inner.getWriter();
  await writer.write(ipad);
  await writer.write(new TextEncoder().encode(prefix));
  const chunks: Uint8Array[] = [];
  let total = 0;
  if (stream) {
    const reader = stream.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > limit) {
        await reader.cancel();
        await writer.abort();
        throw inboundTooLarge(total);
      }
      chunks.push(value);
      await writer.write(value);
    }
  }
  await writer.close();
  const innerDigest = new Uint8Array(await inner.digest);
  const outer = new Uint8Array(BLOCK + innerDigest.byteLength);
  outer.set(opad, 0);
  outer.set(innerDigest, BLOCK);
  const mac = toHex(await crypto.subtle.digest("SHA-256", outer));
  if (!safeEqual(mac, expectedHex)) {
    throw new Unauthorized("The signature does not match the request.", "invalid_signature");
  }
  return chunks;
}

/** One buffer from the verified chunks (made after the verdict; the chunks go with the caller's frame). */
export function concatChunks(chunks: Uint8Array[]): Uint8Array {
  if (chunks.length === 1 && chunks[0]) return chunks[0];
  let total = 0;
  for (const c of chunks) total += c.byteLength;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}

/** An empty relayed body is not mail: refused rather than stored as a 0-byte message. */
export function refuseEmpty(chunks: Uint8Array[]): void {
  if (chunks.every((c) => c.byteLength === 0)) {
    throw new BadRequest("empty_message", "The request body is empty: post the raw RFC 822 message.");
  }
}

/** How long an accepted relay signature is remembered (beyond the 5-minute skew window both ways). */
const RELAY_SIGNATURE_TTL_MS = 15 * 60_000;

/**
 * Binds an accepted relay signature to its recipient. The same signed request may be retried
 * (the message dedupe makes that harmless), but never pointed at another `to`. With `once`
 * (the events endpoint), a signature already seen is refused outright: a replayed request is
 * a 401 `invalid_signature`; a relay retrying signs again with a fresh timestamp.
 * Returns the claimed hash (see `releaseRelaySignature`).
 */
export async function claimRelaySignature(
  ctx: BaseContext,
  signature: string,
  envelopeTo: string,
  opts: { once?: boolean } = {},
): Promise<string> {
  const { db } = ctx;
  const now = ctx.now();
  const signatureHash = await sha256Hex(signature.trim().toLowerCase());
  const to = bareAddress(envelopeTo);
  const inserted = await db
    .insert(relaySignatures)
    .values({ signatureHash, envelopeTo: to, expiresAt: now + RELAY_SIGNATURE_TTL_MS })
    .onConflictDoNothing()
    .returning({ hash: relaySignatures.signatureHash })
    .all();
  if (inserted.length > 0) return signatureHash;
  if (opts.once) throw new Unauthorized("This signature was already used.", "invalid_signature");
  const claimed = await db
    .select({ envelopeTo: relaySignatures.envelopeTo })
    .from(relaySignatures)
    .where(eq(relaySignatures.signatureHash, signatureHash))
    .get();
  if (claimed && claimed.envelopeTo !== to) {
    throw new Unauthorized("This signature was already used for another recipient.", "invalid_signature");
  }
  return signatureHash;
}

/** Forgets a claimed signature whose request failed, so the relay may retry it as it was. */
export async function releaseRelaySignature(ctx: BaseContext, signatureHash: string): Promise<void> {
  await ctx.db
    .delete(relaySignatures)
    .where(eq(relaySignatures.signatureHash, signatureHash))
    .catch(() => undefined);
}

/** Drops relay signatures past their window (the hourly cron). */
export async function purgeRelaySignatures(ctx: BaseContext): Promise<number> {
  const now = ctx.now();
  const gone = await ctx.db
    .delete(relaySignatures)
    .where(lt(relaySignatures.expiresAt, now))
    .returning({ hash: relaySignatures.signatureHash })
    .all();
  return gone.length;
}
