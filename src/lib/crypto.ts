const encoder = new TextEncoder();

const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));

/**
 * The runtime's own hex and base64 codecs (Uint8Array.prototype.toHex / toBase64 and
 * Uint8Array.fromBase64, in workerd's V8), typed here because the TypeScript lib in use predates
 * them. Native code, where the JavaScript fallbacks below showed up in CPU profiles of every
 * request (a key digest) and of every mail (attachments and their hashes). The fallbacks keep
 * the helpers working in a runtime without them.
 */
interface NativeCodecs {
  toHex?: () => string;
  toBase64?: () => string;
}
const native = Uint8Array as unknown as { fromBase64?: (text: string) => Uint8Array };
const hasNativeHex = typeof (new Uint8Array(0) as NativeCodecs).toHex === "function";
const hasNativeBase64 = typeof (new Uint8Array(0) as NativeCodecs).toBase64 === "function";

/** Lower-case hex of the bytes. */
export function toHex(bytes: ArrayBuffer | Uint8Array): string {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  if (hasNativeHex) return (view as NativeCodecs).toHex?.() as string;
  return fallbackCodecs.toHex(view);
}

/** The JavaScript codecs used where the runtime has no native ones (exported for their tests). */
export const fallbackCodecs = {
  toHex(view: Uint8Array): string {
    let out = "";
    for (let i = 0; i < view.length; i++) out += HEX[view[i] as number];
    return out;
  },
  toBase64: (view: Uint8Array): string => btoa(bytesToLatin1(view)),
  fromBase64: (text: string): Uint8Array => latin1ToBytes(atob(text)),
};

/** SHA-256 of a UTF-8 string (or of bytes), as hex. */
export async function sha256Hex(input: string | Uint8Array): Promise<string> {
  return toHex(await crypto.subtle.digest("SHA-256", typeof input === "string" ? encoder.encode(input) : input));
}

/** Constant-time string comparison (lengths are not secret here: tokens have fixed shapes). */
export function safeEqual(a: string, b: string): boolean {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  if (x.byteLength !== y.byteLength) return false;
  return crypto.subtle.timingSafeEqual(x, y);
}

/** Bytes → one char per byte, 0x00–0xff (TextDecoder's "latin1" is windows-1252 and remaps 0x80–0x9f). */
export function bytesToLatin1(bytes: ArrayBuffer | Uint8Array): string {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  // Each byte widened to one UTF-16 code unit, decoded natively: exact for every byte value (a
  // "latin1" TextDecoder is windows-1252, which remaps 0x80–0x9F), and many times faster than
  // String.fromCharCode over chunks (which cost ~1.5 ms for a 50 KB mail). Widened a chunk at a
  // time, so a 25 MiB mail costs one 128 KiB buffer, not a 50 MiB copy.
  if (view.length <= LATIN1_CHUNK) return utf16.decode(widen(view));
  const parts: string[] = [];
  for (let i = 0; i < view.length; i += LATIN1_CHUNK)
    parts.push(utf16.decode(widen(view.subarray(i, i + LATIN1_CHUNK))));
  return parts.join("");
}

const LATIN1_CHUNK = 64 * 1024;
const wide = new Uint16Array(LATIN1_CHUNK);

/** The bytes as UTF-16 code units, in the shared buffer (decoded before the next call reuses it). */
function widen(bytes: Uint8Array): Uint16Array {
  const out = wide.subarray(0, bytes.length);
  out.set(bytes);
  return out;
}

const utf16 = new TextDecoder("utf-16le");

/** One byte per char (the low 8 bits): the inverse of bytesToLatin1. */
export function latin1ToBytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0xff;
  return out;
}

/** Standard base64 of bytes. */
export function toBase64(bytes: ArrayBuffer | Uint8Array): string {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  if (hasNativeBase64) return (view as NativeCodecs).toBase64?.() as string;
  return fallbackCodecs.toBase64(view);
}

/**
 * Bytes of standard base64 text, as forgiving as atob: ASCII whitespace is skipped, padding may
 * be missing. Throws on anything else, like atob.
 */
export function fromBase64(text: string): Uint8Array {
  if (native.fromBase64) return native.fromBase64(text);
  return fallbackCodecs.fromBase64(text);
}

/** The parts one after another (strings as UTF-8). */
export function concatBytes(...parts: (string | Uint8Array)[]): Uint8Array {
  const chunks = parts.map((p) => (typeof p === "string" ? encoder.encode(p) : p));
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

async function derivedAesKey(secret: string, info: string): Promise<CryptoKey> {
  const base = await crypto.subtle.importKey("raw", encoder.encode(secret), "HKDF", false, ["deriveKey"]);
  return crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: encoder.encode(info) },
    base,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
}

/** AES-256-GCM under a key derived (HKDF) from `secret`; output is `iv.ciphertext` in base64. */
export async function sealText(secret: string, info: string, plaintext: string): Promise<string> {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const key = await derivedAesKey(secret, info);
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, encoder.encode(plaintext)));
  return `${toBase64(iv)}.${toBase64(ct)}`;
}

/** Reverses `sealText`; throws if the secret or data is wrong. */
export async function openText(secret: string, info: string, sealed: string): Promise<string> {
  const [iv, ct] = sealed.split(".");
  if (!iv || !ct) throw new Error("malformed sealed text");
  const key = await derivedAesKey(secret, info);
  const pt = await crypto.subtle.decrypt({ name: "AES-GCM", iv: fromBase64(iv) }, key, fromBase64(ct));
  return new TextDecoder().decode(pt);
}
