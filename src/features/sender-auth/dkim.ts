/**
 * DKIM keys and signatures (RFC 6376), on WebCrypto: RSA 2048 key pairs for selector `default`,
 * and rsa-sha256 signatures with relaxed/relaxed canonicalisation. Hand-written because the
 * maintained signers (mailauth, nodemailer's) are built on Node's crypto and stream APIs; the
 * tests check every signature made here with mailauth, an independent verifier.
 */

import { bytesToLatin1, concatBytes, fromBase64, latin1ToBytes, toBase64 } from "../../lib/crypto";

export const DKIM_SELECTOR = "default";

const RSA = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" } as const;

/** A fresh RSA 2048 pair: PKCS#8 private key and SPKI public key, both base64 (no PEM armour). */
export async function generateDkimKeyPair(): Promise<{ privateKey: string; publicKey: string }> {
  const pair = (await crypto.subtle.generateKey(
    { ...RSA, modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]) },
    true,
    ["sign", "verify"],
  )) as CryptoKeyPair;
  const [pkcs8, spki] = await Promise.all([
    crypto.subtle.exportKey("pkcs8", pair.privateKey) as Promise<ArrayBuffer>,
    crypto.subtle.exportKey("spki", pair.publicKey) as Promise<ArrayBuffer>,
  ]);
  return { privateKey: toBase64(pkcs8), publicKey: toBase64(spki) };
}

/** PEM or bare base64 PKCS#8 → base64 without armour or whitespace. */
export function normalizeKeyText(text: string): string {
  return text
    .replace(/-----(BEGIN|END) [A-Z ]+-----/g, "")
    .replace(/\\n/g, "")
    .replace(/\s+/g, "");
}

/** Imports a PKCS#8 private key (PEM or base64) for signing. */
export async function importSigningKey(pkcs8: string): Promise<CryptoKey> {
  return crypto.subtle.importKey("pkcs8", fromBase64(normalizeKeyText(pkcs8)), RSA, true, ["sign"]);
}

/** The SPKI public key (base64) belonging to a PKCS#8 private key: what its DKIM record must publish. */
export async function publicKeyOf(pkcs8: string): Promise<string> {
  const key = await importSigningKey(pkcs8);
  const jwk = (await crypto.subtle.exportKey("jwk", key)) as JsonWebKey;
  const pub = await crypto.subtle.importKey("jwk", { kty: "RSA", n: jwk.n, e: jwk.e, ext: true }, RSA, true, [
    "verify",
  ]);
  return toBase64((await crypto.subtle.exportKey("spki", pub)) as ArrayBuffer);
}

/** The TXT value to publish at `<selector>._domainkey.<domain>`. */
export function dkimRecordValue(publicKey: string): string {
  return `v=DKIM1; k=rsa; p=${publicKey}`;
}

/**
 * Headers signed when present. From is listed once more than it occurs ("over-signing"), so a
 * second From added in transit breaks the signature instead of riding on it.
 */
const SIGNED_HEADERS = [
  "from",
  "to",
  "cc",
  "reply-to",
  "subject",
  "date",
  "message-id",
  "in-reply-to",
  "references",
  "mime-version",
  "content-type",
  "content-transfer-encoding",
  "list-unsubscribe",
  "list-unsubscribe-post",
];

/**
 * RFC 6376 §3.4.2: lower-case name, unfold, collapse WSP, drop WSP around the colon and at the
 * end. Only space and tab are WSP: String.trim() would also strip U+00A0 (byte 0xA0 read as
 * latin-1) and other Unicode spaces, and the signature would not verify at receivers that follow
 * the RFC. (mailauth, the tests' verifier, trims with \s too, so this case is unit-tested here.)
 */
export function relaxedHeader(name: string, value: string): string {
  const v = value
    .replace(/\r\n/g, "")
    .replace(/[ \t]+/g, " ")
    .replace(/^ | $/g, "");
  return `${name.toLowerCase().replace(/[ \t]+$/, "")}:${v}\r\n`;
}

/** RFC 6376 §3.4.4: collapse whitespace, drop it at line ends, drop empty lines at the end. */
function relaxedBody(body: string): string {
  const lines = body.split("\r\n").map((l) => l.replace(/[ \t]+/g, " ").replace(/ $/, ""));
  while (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  return lines.length === 0 ? "" : `${lines.join("\r\n")}\r\n`;
}

/** Header fields in order, each with its name and raw value (folding kept). */
function parseHeaders(block: string): { name: string; value: string }[] {
  const fields: { name: string; value: string }[] = [];
  for (const line of block.split("\r\n")) {
    if ((line.startsWith(" ") || line.startsWith("\t")) && fields.length > 0) {
      const last = fields[fields.length - 1] as { name: string; value: string };
      last.value += `\r\n${line}`;
      continue;
    }
    const colon = line.indexOf(":");
    if (colon > 0) fields.push({ name: line.slice(0, colon), value: line.slice(colon + 1) });
  }
  return fields;
}

/**
 * Adds a `DKIM-Signature` (rsa-sha256, relaxed/relaxed) for `domain` / `selector` on top of the
 * message. The bytes are read one char per byte so 8-bit content passes through unchanged.
 */
export async function dkimSign(
  raw: Uint8Array,
  opts: { domain: string; selector: string; key: CryptoKey; now: number },
): Promise<Uint8Array> {
  const text = bytesToLatin1(raw).replace(/\r?\n/g, "\r\n");
  const split = text.indexOf("\r\n\r\n");
  const headerBlock = split === -1 ? text : text.slice(0, split);
  const body = split === -1 ? "" : text.slice(split + 4);

  const bodyHash = toBase64(await crypto.subtle.digest("SHA-256", latin1ToBytes(relaxedBody(body))));

  // Signed instances are taken bottom-up (§5.4.2); a name listed more often than it occurs signs "absent".
  const fields = parseHeaders(headerBlock);
  const signed: string[] = [];
  let canonical = "";
  for (const name of SIGNED_HEADERS) {
    const instances = fields.filter((f) => f.name.trim().toLowerCase() === name).reverse();
    for (const f of instances) {
      signed.push(name);
      canonical += relaxedHeader(f.name, f.value);
    }
  }
  signed.push("from");

  // Folded where a line would grow long; relaxed canonicalisation unfolds it the same way on both sides.
  const value = [
    ` v=1; a=rsa-sha256; c=relaxed/relaxed; d=${opts.domain}; s=${opts.selector}; t=${Math.floor(opts.now / 1000)};`,
    `h=${signed.join(":")};`,
    `bh=${bodyHash};`,
    "b=",
  ].join("\r\n\t");
  const toSign = canonical + relaxedHeader("DKIM-Signature", value).replace(/\r\n$/, "");
  const signature = toBase64(await crypto.subtle.sign(RSA, opts.key, latin1ToBytes(toSign)));
  const header = `DKIM-Signature:${value}${signature}\r\n`;
  return concatBytes(latin1ToBytes(header), raw);
}
