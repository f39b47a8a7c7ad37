import type { Bindings } from "../../env";
import { concatBytes, fromBase64, openText, sealText, toBase64, toHex } from "../../lib/crypto";

/**
 * Webhook signatures, exactly as API.md: our own `X-Mailbot-Signature` (hex HMAC keyed by the
 * secret string) and Standard Webhooks `webhook-signature` (base64 HMAC keyed by the bytes after
 * `whsec_`), both over the exact bytes sent.
 */

const encoder = new TextEncoder();
const SECRET_PREFIX = "whsec_";
const SEALED_PREFIX = "sealed:v1:";
const SEAL_INFO = "mailbot webhook secret";

/** A fresh signing secret: `whsec_` + base64 of 24 random bytes (Standard Webhooks wants 24–64). */
export function newSecret(): string {
  return SECRET_PREFIX + toBase64(crypto.getRandomValues(new Uint8Array(24)));
}

async function hmac(key: Uint8Array, message: Uint8Array): Promise<Uint8Array> {
  const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, message));
}

/** The Standard Webhooks key: the base64-decoded part after `whsec_`. */
function standardKey(secret: string): Uint8Array {
  return fromBase64(secret.slice(SECRET_PREFIX.length));
}

/**
 * Both header sets for one delivery. `secrets` is the current secret first, then (during a
 * rotation) the previous one: each header then lists one signature per secret, space-separated.
 */
export async function signatureHeaders(input: {
  eventId: string;
  timestampSeconds: number;
  body: Uint8Array;
  secrets: string[];
}): Promise<Record<string, string>> {
  const ts = String(input.timestampSeconds);
  const ours = await Promise.all(
    input.secrets.map(async (s) => `sha256=${toHex(await hmac(encoder.encode(s), concatBytes(ts, ".", input.body)))}`),
  );
  const standard = await Promise.all(
    input.secrets.map(
      async (s) => `v1,${toBase64(await hmac(standardKey(s), concatBytes(input.eventId, ".", ts, ".", input.body)))}`,
    ),
  );
  return {
    "X-Mailbot-Timestamp": ts,
    "X-Mailbot-Signature": ours.join(" "),
    "webhook-id": input.eventId,
    "webhook-timestamp": ts,
    "webhook-signature": standard.join(" "),
  };
}

/**
 * Secrets must stay usable for signing, so they are stored recoverable. With
 * WEBHOOK_ENCRYPTION_KEY set they are sealed (AES-256-GCM, HKDF-derived key), so a database
 * dump alone does not reveal them; without it they are stored as issued.
 */
export async function sealSecret(env: Pick<Bindings, "WEBHOOK_ENCRYPTION_KEY">, secret: string): Promise<string> {
  if (!env.WEBHOOK_ENCRYPTION_KEY) return secret;
  return SEALED_PREFIX + (await sealText(env.WEBHOOK_ENCRYPTION_KEY, SEAL_INFO, secret));
}

/** Reverses `sealSecret`; plain secrets (stored before a key was configured) pass through. */
export async function openSecret(env: Pick<Bindings, "WEBHOOK_ENCRYPTION_KEY">, stored: string): Promise<string> {
  if (!stored.startsWith(SEALED_PREFIX)) return stored;
  if (!env.WEBHOOK_ENCRYPTION_KEY) throw new Error("a webhook secret is sealed but WEBHOOK_ENCRYPTION_KEY is not set");
  return openText(env.WEBHOOK_ENCRYPTION_KEY, SEAL_INFO, stored.slice(SEALED_PREFIX.length));
}
