import { config } from "../../config";
import type { Bindings } from "../../env";
import { safeEqual, toHex } from "../../lib/crypto";
import { bareAddress, canonicalRecipient } from "../../mail/address";

/**
 * Per-recipient bounce addresses (VERP with a token). Every outside copy of a message leaves with
 * its own envelope sender `local+msg_<id>.<token>@domain`, where the token is an HMAC over
 * (message id, recipient) under BOUNCE_SECRET. A delivery status notification counts only for the
 * recipient whose token is on the address it came back to, so a person who received one copy (and
 * so knows its Return-Path) can speak for that copy only, and nobody can mint another's address.
 */

/** 20 hex characters: 80 bits of the HMAC, with no oracle to try guesses against. */
const TOKEN_HEX = 20;
const TAG = /^(msg_[0-9a-z]{26})(?:\.([0-9a-f]{20}))?$/;

let ephemeral: string | null = null;

/**
 * The key tokens are made with: BOUNCE_SECRET; in development only, without it, a random key made
 * once per isolate (`npm run dev` writes a per-checkout one into .dev.vars). Anywhere else without
 * the secret there is none: mail leaves with a token-less bounce address and no DSN counts (fail closed).
 */
export function bounceSecret(env: Bindings): string | null {
  const secret = env.BOUNCE_SECRET?.trim();
  if (secret) return secret;
  if (!config(env).isDevelopment) return null;
  ephemeral ??= Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16).padStart(2, "0")).join("");
  return ephemeral;
}

const keys = new Map<string, Promise<CryptoKey>>();

async function tokenFor(secret: string, messageId: string, recipient: string): Promise<string> {
  let key = keys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
    ]);
    keys.set(secret, key);
  }
  const data = new TextEncoder().encode(`bounce-v1\n${messageId}\n${bareAddress(recipient).toLowerCase()}`);
  return toHex(await crypto.subtle.sign("HMAC", await key, data)).slice(0, TOKEN_HEX);
}

/** The bounce address of one recipient's copy (token-less when the deployment has no secret). */
export async function bounceAddress(
  env: Bindings,
  inboxAddress: string,
  messageId: string,
  recipient: string,
): Promise<string> {
  const at = inboxAddress.lastIndexOf("@");
  const secret = bounceSecret(env);
  const tag = secret ? `${messageId}.${await tokenFor(secret, messageId, recipient)}` : messageId;
  return `${inboxAddress.slice(0, at)}+${tag}${inboxAddress.slice(at)}`;
}

/** recipient → bounce address, for every recipient of a message. */
export async function bounceAddresses(
  env: Bindings,
  inboxAddress: string,
  messageId: string,
  recipients: string[],
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const r of recipients) out[r] = await bounceAddress(env, inboxAddress, messageId, r);
  return out;
}

/** The message id and token an address carries in its `+tag`, if any. */
export function parseBounceTag(address: string | null): { messageId: string; token: string | null } | null {
  if (!address) return null;
  const tag = canonicalRecipient(address).tag?.toLowerCase();
  const m = tag ? TAG.exec(tag) : null;
  return m ? { messageId: m[1] as string, token: m[2] ?? null } : null;
}

/**
 * Which of the message's recipients the token was made for, or why none: `no_bounce_token` (a plain
 * or token-less address), `bounce_tokens_not_configured`, `invalid_bounce_token`.
 */
export async function recipientOfToken(
  env: Bindings,
  messageId: string,
  token: string | null,
  recipients: string[],
): Promise<{ recipient: string } | { reason: string }> {
  if (!token) return { reason: "no_bounce_token" };
  const secret = bounceSecret(env);
  if (!secret) return { reason: "bounce_tokens_not_configured" };
  for (const r of new Set(recipients.map((a) => bareAddress(a).toLowerCase()))) {
    if (safeEqual(await tokenFor(secret, messageId, r), token)) return { recipient: r };
  }
  return { reason: "invalid_bounce_token" };
}
