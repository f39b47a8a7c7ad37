/**
 * Authentication of the inbound relay (`POST /webhooks/inbound/*`): the shared secret, the
 * signature headers and their HMAC, the capped body read, and the signature claims that stop a
 * signed request from being replayed or pointed at another recipient.
 */
import { eq, lt } from "drizzle-orm";
import { relaySignatures } from "../../db/schema";
import type { Bindings } from "../../env";
import type { BaseContext } from "../../lib/context";
import { safeEqual, sha256Hex, toHex } from "../../lib/crypto";
import { ServiceUnavailable, Unauthorized } from "../../lib/errors";
import { bareAddress } from "../../mail/address";
import { inboundTooLarge } from "./inbound.service";

/** Largest clock difference accepted between the relay's timestamp and ours. */
export const MAX_SKEW_SECONDS = 300;

/** Reads a request body, refusing it (413) as soon as it passes `limit` bytes. */
export async function readCapped(stream: ReadableStream<Uint8Array> | null, limit: number): Promise<Uint8Array> {
  if (!stream) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel();
      throw inboundTooLarge(total);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** Both headers present, a well-formed signature, and a timestamp within 5 minutes. */
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

export function checkHeaders(timestamp: string | undefined, signature: string | undefined): void {
  if (!timestamp || !signature || !/^sha256=[0-9a-f]{64}$/i.test(signature.trim())) {
    throw new Unauthorized(
      "X-Mailbot-Timestamp and X-Mailbot-Signature (sha256=<64 hex>) are required.",
      "invalid_signature",
    );
  }
  if (!/^\d{1,12}$/.test(timestamp) || Math.abs(Date.now() / 1000 - Number(timestamp)) > MAX_SKEW_SECONDS) {
    throw new Unauthorized(
      "X-Mailbot-Timestamp is more than 5 minutes away from the server's clock.",
      "timestamp_out_of_range",
    );
  }
}

/** Checks `sha256=<hex HMAC(secret, timestamp + "." + body)>` in constant time. */
export async function verifySignature(
  secret: string,
  timestamp: string,
  signature: string,
  body: Uint8Array,
): Promise<void> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const prefix = new TextEncoder().encode(`${timestamp}.`);
  const signed = new Uint8Array(prefix.byteLength + body.byteLength);
  signed.set(prefix, 0);
  signed.set(body, prefix.byteLength);
  const expected = `sha256=${toHex(await crypto.subtle.sign("HMAC", key, signed))}`;
  if (!safeEqual(expected, signature.trim().toLowerCase())) {
    throw new Unauthorized("The signature does not match the body.", "invalid_signature");
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
