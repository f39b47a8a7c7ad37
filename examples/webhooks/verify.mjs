import { createHmac, timingSafeEqual } from "node:crypto";

// `headers`: lower-case names (Node's req.headers). `body`: the raw request bytes, exactly as
// received (a Buffer), never JSON parsed and serialised again.
const fresh = (ts, tolerance = 300) => Math.abs(Date.now() / 1000 - Number(ts)) <= tolerance;
const matches = (header, expected) =>
  (header ?? "").split(" ").some((s) => s.length === expected.length && timingSafeEqual(Buffer.from(s), Buffer.from(expected)));

/** Standard Webhooks: webhook-signature = v1,<base64 HMAC-SHA256(base64-decoded secret after whsec_, id.timestamp.body)>. */
export function verifyStandardWebhook(secret, headers, body) {
  const id = headers["webhook-id"];
  const ts = headers["webhook-timestamp"];
  if (!id || !ts || !fresh(ts)) return false;
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const digest = createHmac("sha256", key).update(`${id}.${ts}.`).update(body).digest("base64");
  return matches(headers["webhook-signature"], `v1,${digest}`);
}

/** X-Mailbot-Signature = sha256=<hex HMAC-SHA256(the secret string, timestamp.body)>. */
export function verifyMailbotSignature(secret, headers, body) {
  const ts = headers["x-mailbot-timestamp"];
  if (!ts || !fresh(ts)) return false;
  const digest = createHmac("sha256", secret).update(`${ts}.`).update(body).digest("hex");
  return matches(headers["x-mailbot-signature"], `sha256=${digest}`);
}
