import { toHex } from "../../src/lib/crypto";
import { call } from "./api";

/** INBOUND_SECRET of the test configuration (vitest.config.ts). */
export const INBOUND_SECRET = "test-inbound-secret";

/** The relay's signature headers over `{timestamp}.{body}` (HMAC-SHA256 with INBOUND_SECRET). */
export async function relaySignature(
  body: Uint8Array | string,
  opts: { timestamp?: number; secret?: string } = {},
): Promise<{ "X-Mailbot-Timestamp": string; "X-Mailbot-Signature": string }> {
  const ts = String(opts.timestamp ?? Math.floor(Date.now() / 1000));
  const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(opts.secret ?? INBOUND_SECRET),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const signed = new Uint8Array([...new TextEncoder().encode(`${ts}.`), ...bytes]);
  return {
    "X-Mailbot-Timestamp": ts,
    "X-Mailbot-Signature": `sha256=${toHex(await crypto.subtle.sign("HMAC", key, signed))}`,
  };
}

/** Signed JSON headers for POST /webhooks/inbound/events. */
export async function signedJson(body: string, opts: { timestamp?: number; secret?: string } = {}) {
  return { ...(await relaySignature(body, opts)), "Content-Type": "application/json" };
}

/** Posts relay events, signed like the relay would. */
export async function relayEvents(events: unknown[]) {
  const body = JSON.stringify({ events });
  return call("POST", "/webhooks/inbound/events", { rawBody: body, headers: await signedJson(body) });
}

/** A relay event: a hard bounce (5.1.1) of `recipient` for our message `messageId`. */
export const bounce = (messageId: string, recipient: string) => ({
  type: "bounce",
  message_id: messageId,
  recipient,
  status_code: "5.1.1",
  diagnostic: "550 5.1.1 user unknown",
});

/** A relay event: a complaint by `recipient` about our message `messageId`. */
export const complaint = (messageId: string, recipient: string) => ({
  type: "complaint",
  message_id: messageId,
  recipient,
});
