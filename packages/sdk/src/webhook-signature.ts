// Verifying webhook deliveries, both schemes of docs/webhooks.md, with WebCrypto only (Node >= 20,
// Workers, browsers): X-Mailbot-Signature (hex HMAC keyed by the secret string over
// `timestamp.body`) and Standard Webhooks (base64 HMAC keyed by the bytes after `whsec_` over
// `id.timestamp.body`). During a rotation a header lists several signatures: any one may match.

export type HeadersLike = Headers | Record<string, string | string[] | undefined> | [string, string][];
export type BodyLike = string | Uint8Array | ArrayBuffer;

export interface VerifyOptions {
  /** Refuse timestamps further than this from now (seconds). Default 300. */
  toleranceSeconds?: number;
  /** "now" in milliseconds (tests). */
  now?: number;
}

export interface VerifyResult {
  ok: boolean;
  /** The scheme that matched. */
  scheme: "standard" | "mailbot" | null;
  reason?: "missing_headers" | "timestamp_out_of_range" | "signature_mismatch";
}

const encoder = new TextEncoder();

function header(headers: HeadersLike, name: string): string | undefined {
  if (headers instanceof Headers) return headers.get(name) ?? undefined;
  const entries = Array.isArray(headers) ? headers : Object.entries(headers);
  for (const [k, v] of entries) {
    if (k.toLowerCase() === name) return Array.isArray(v) ? v.join(" ") : (v ?? undefined);
  }
  return undefined;
}

function bytes(body: BodyLike): Uint8Array {
  if (typeof body === "string") return encoder.encode(body);
  return body instanceof Uint8Array ? body : new Uint8Array(body);
}

function concat(...parts: (string | Uint8Array)[]): Uint8Array {
  const arrays = parts.map((p) => (typeof p === "string" ? encoder.encode(p) : p));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.length;
  }
  return out;
}

async function hmac(key: Uint8Array, message: Uint8Array): Promise<Uint8Array> {
  const k = await crypto.subtle.importKey("raw", key as BufferSource, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, message as BufferSource));
}

const toHex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const toBase64 = (b: Uint8Array) => btoa(String.fromCharCode(...b));
function fromBase64(s: string): Uint8Array {
  const bin = atob(s);
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** Constant-time for equal lengths (a length difference says nothing secret). */
function equal(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

const anyMatches = (headerValue: string, expected: string) =>
  headerValue
    .split(" ")
    .filter(Boolean)
    .some((s) => equal(s, expected));

/**
 * Checks a delivery: `body` must be the raw bytes received, before any JSON parsing. Accepted
 * when either present scheme matches and its timestamp is within the tolerance.
 */
export async function checkWebhook(
  headers: HeadersLike,
  body: BodyLike,
  secret: string,
  options: VerifyOptions = {},
): Promise<VerifyResult> {
  const tolerance = options.toleranceSeconds ?? 300;
  const now = (options.now ?? Date.now()) / 1000;
  const raw = bytes(body);
  const fresh = (ts: string) => /^\d+$/.test(ts) && Math.abs(now - Number(ts)) <= tolerance;
  let reason: VerifyResult["reason"] = "missing_headers";

  const id = header(headers, "webhook-id");
  const wts = header(headers, "webhook-timestamp");
  const wsig = header(headers, "webhook-signature");
  if (id && wts && wsig && secret.startsWith("whsec_")) {
    if (!fresh(wts)) reason = "timestamp_out_of_range";
    else {
      const digest = await hmac(fromBase64(secret.slice("whsec_".length)), concat(id, ".", wts, ".", raw));
      if (anyMatches(wsig, `v1,${toBase64(digest)}`)) return { ok: true, scheme: "standard" };
      reason = "signature_mismatch";
    }
  }

  const mts = header(headers, "x-mailbot-timestamp");
  const msig = header(headers, "x-mailbot-signature");
  if (mts && msig) {
    if (!fresh(mts)) reason = reason === "signature_mismatch" ? reason : "timestamp_out_of_range";
    else {
      const digest = await hmac(encoder.encode(secret), concat(mts, ".", raw));
      if (anyMatches(msig, `sha256=${toHex(digest)}`)) return { ok: true, scheme: "mailbot" };
      reason = "signature_mismatch";
    }
  }
  return { ok: false, scheme: null, reason };
}

/** `true` when the delivery is authentic and fresh (see checkWebhook for the reason of a refusal). */
export async function verifyWebhook(
  headers: HeadersLike,
  body: BodyLike,
  secret: string,
  options: VerifyOptions = {},
): Promise<boolean> {
  return (await checkWebhook(headers, body, secret, options)).ok;
}
