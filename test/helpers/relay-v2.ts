import { toHex } from "../../src/lib/crypto";
import { INBOUND_SECRET } from "./relay";

/** The relay's v2 headers: `v2=<hex HMAC(secret, timestamp.to.from.body)>` (API.md). */
export async function relayV2(
  body: string | Uint8Array,
  to: string,
  from: string,
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
  const signed = new Uint8Array([...new TextEncoder().encode(`${ts}.${to}.${from}.`), ...bytes]);
  return {
    "X-Mailbot-Timestamp": ts,
    "X-Mailbot-Signature": `v2=${toHex(await crypto.subtle.sign("HMAC", key, signed))}`,
  };
}
