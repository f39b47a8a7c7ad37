import { stripControls } from "./address";
/**
 * RFC 5322 / MIME composition for outbound mail.
 *
 * Hand-written rather than `mimetext` (the generator Cloudflare's docs use): mimetext 3 labels
 * UTF-8 bodies `7bit`, writes non-ASCII custom headers and filenames raw, puts a long subject in
 * one encoded-word far past RFC 2047's 75 characters and never wraps body lines at 998. Real
 * clients mostly cope, strict MTAs and DKIM canonicalisation do not. This module is small, has no
 * dependency, and its output is checked by independent parsers in the tests (postal-mime inside
 * workerd, the SMTP server's view in Node).
 */

export interface MailAddress {
  address: string;
  name?: string | null;
}

export interface ComposeAttachment {
  filename: string;
  contentType: string;
  content: Uint8Array;
  contentId?: string | null;
  disposition?: "attachment" | "inline";
}

export interface ComposeInput {
  from: MailAddress;
  to: MailAddress[];
  cc: MailAddress[];
  replyTo?: MailAddress | null;
  subject: string;
  text: string | null;
  html: string | null;
  messageId: string;
  date: Date;
  inReplyTo?: string | null;
  references?: string[];
  /** Caller headers, already checked against the refused list. */
  headers?: [string, string][];
  attachments?: ComposeAttachment[];
}

const CRLF = "\r\n";
const encoder = new TextEncoder();

/** True when the text needs no encoding in a header (printable ASCII and spaces). */
function isPlainAscii(text: string): boolean {
  return /^[\x20-\x7e]*$/.test(text);
}

/**
 * RFC 2047 B-encoded words of at most 75 characters, split between code points (a UTF-8
 * sequence is never cut across two words).
 */
export function encodeWords(text: string): string[] {
  const words: string[] = [];
  const maxBytes = 45; // 45 bytes → 60 base64 chars; with "=?utf-8?B?" and "?=" that is 72.
  let chunk: number[] = [];
  const flush = () => {
    if (chunk.length > 0) words.push(`=?utf-8?B?${base64(Uint8Array.from(chunk))}?=`);
    chunk = [];
  };
  for (const ch of text) {
    const bytes = encoder.encode(ch);
    if (chunk.length + bytes.length > maxBytes) flush();
    chunk.push(...bytes);
  }
  flush();
  return words;
}

/** An unstructured header value (Subject, custom headers): as is when ASCII, else encoded words. */
export function headerText(text: string): string {
  const clean = stripControls(text);
  return isPlainAscii(clean) ? clean : encodeWords(clean).join(" ");
}

/** Display name: atoms as is, other ASCII quoted, anything else encoded. */
function displayName(name: string): string {
  const clean = stripControls(name).trim();
  if (!isPlainAscii(clean)) return encodeWords(clean).join(" ");
  if (/^[\w !#$%&'*+\-/=?^`{|}~]+$/.test(clean)) return clean;
  return `"${clean.replace(/(["\\])/g, "\\$1")}"`;
}

/** `Name <addr>` or `addr`. */
export function formatAddress(a: MailAddress): string {
  return a.name ? `${displayName(a.name)} <${a.address}>` : a.address;
}

/**
 * Folds a header line at whitespace so lines stay within 78 characters where possible
 * (RFC 5322 §2.2.3); a run without spaces is left whole (it is still under 998).
 */
export function foldHeader(name: string, value: string): string {
  const tokens = value.split(" ");
  const lines: string[] = [];
  let line = `${name}:`;
  for (const token of tokens) {
    if (line.length + 1 + token.length > 78 && line.length > name.length + 1) {
      lines.push(line);
      line = ` ${token}`;
    } else {
      line += ` ${token}`;
    }
  }
  lines.push(line);
  return lines.join(CRLF);
}

function base64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** Base64 in lines of 76 characters (RFC 2045). */
export function base64Lines(bytes: Uint8Array): string {
  const b64 = base64(bytes);
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 76) lines.push(b64.slice(i, i + 76));
  return lines.join(CRLF);
}

const HEX = "0123456789ABCDEF";

/**
 * Quoted-printable (RFC 2045 §6.7) of UTF-8 text: CRLF line breaks kept as hard breaks, lines
 * soft-wrapped at 76, trailing whitespace and `=` encoded, and a line-leading `.` encoded so no
 * SMTP hop can mistake it for the end of data.
 */
export function quotedPrintable(text: string): string {
  const out: string[] = [];
  for (const line of text.replace(/\r\n|\r|\n/g, "\n").split("\n")) {
    const bytes = encoder.encode(line);
    let current = "";
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i] as number;
      const last = i === bytes.length - 1;
      let token: string;
      if ((b === 0x20 || b === 0x09) && !last) token = String.fromCharCode(b);
      else if (b >= 33 && b <= 126 && b !== 61 && !(b === 0x2e && current.length === 0)) token = String.fromCharCode(b);
      else token = `=${HEX[b >> 4]}${HEX[b & 15]}`;
      if (current.length + token.length > 75) {
        out.push(`${current}=`);
        current = "";
      }
      current += token;
    }
    out.push(current);
  }
  return out.join(CRLF);
}

/** A text part: 7bit when it is short-lined ASCII, quoted-printable otherwise. */
function textPart(contentType: string, text: string): string {
  const normalized = text.replace(/\r\n|\r|\n/g, CRLF);
  const sevenBit = /^[\t\x20-\x7e\r\n]*$/.test(normalized) && normalized.split(CRLF).every((l) => l.length <= 998);
  return [
    `Content-Type: ${contentType}; charset=utf-8`,
    `Content-Transfer-Encoding: ${sevenBit ? "7bit" : "quoted-printable"}`,
    "",
    sevenBit ? normalized : quotedPrintable(text),
  ].join(CRLF);
}

/** A filename parameter: plain when safe ASCII, else RFC 2231 `filename*=utf-8''…`. */
function filenameParam(param: string, filename: string): string {
  const clean = filename.replace(/[\r\n"\\]/g, "_");
  if (isPlainAscii(clean) && clean.length <= 60) return `${param}="${clean}"`;
  const encoded = Array.from(encoder.encode(filename), (b) =>
    /[A-Za-z0-9!#$&+.^_`|~-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${HEX[b >> 4]}${HEX[b & 15]}`,
  ).join("");
  return `${param}*=utf-8''${encoded}`;
}

function attachmentPart(a: ComposeAttachment): string {
  const disposition = a.disposition ?? "attachment";
  const lines = [
    `Content-Type: ${a.contentType};${CRLF} ${filenameParam("name", a.filename)}`,
    "Content-Transfer-Encoding: base64",
    `Content-Disposition: ${disposition};${CRLF} ${filenameParam("filename", a.filename)}`,
  ];
  if (a.contentId) lines.push(`Content-ID: <${a.contentId.replace(/^<|>$/g, "")}>`);
  return [...lines, "", base64Lines(a.content)].join(CRLF);
}

function boundary(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `mb_${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function multipart(subtype: string, parts: string[]): string {
  const b = boundary();
  return [
    `Content-Type: multipart/${subtype};${CRLF} boundary="${b}"`,
    "",
    ...parts.map((p) => `--${b}${CRLF}${p}`),
    `--${b}--`,
    "",
  ].join(CRLF);
}

/** RFC 5322 date-time, in UTC. */
export function rfc5322Date(d: Date): string {
  const days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
  const months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${days[d.getUTCDay()]}, ${pad(d.getUTCDate())} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} ${pad(
    d.getUTCHours(),
  )}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`;
}

/** The whole message as bytes, with CRLF line ends. Bcc never appears: it is envelope only. */
export function composeMessage(input: ComposeInput): Uint8Array {
  const head: string[] = [foldHeader("From", formatAddress(input.from))];
  if (input.to.length > 0) head.push(foldHeader("To", input.to.map(formatAddress).join(", ")));
  if (input.cc.length > 0) head.push(foldHeader("Cc", input.cc.map(formatAddress).join(", ")));
  if (input.replyTo) head.push(foldHeader("Reply-To", formatAddress(input.replyTo)));
  head.push(foldHeader("Subject", headerText(input.subject)));
  head.push(`Date: ${rfc5322Date(input.date)}`);
  head.push(`Message-ID: ${input.messageId}`);
  if (input.inReplyTo) head.push(`In-Reply-To: ${input.inReplyTo}`);
  if (input.references && input.references.length > 0) head.push(foldHeader("References", input.references.join(" ")));
  for (const [name, value] of input.headers ?? []) head.push(foldHeader(name, headerText(value)));
  head.push("MIME-Version: 1.0");

  const alternatives: string[] = [];
  if (input.text !== null) alternatives.push(textPart("text/plain", input.text));
  if (input.html !== null) alternatives.push(textPart("text/html", input.html));
  let body = alternatives.length === 1 ? (alternatives[0] as string) : multipart("alternative", alternatives);
  const files = input.attachments ?? [];
  if (files.length > 0) body = multipart("mixed", [body, ...files.map(attachmentPart)]);
  return encoder.encode(`${head.join(CRLF)}${CRLF}${body.endsWith(CRLF) ? body : body + CRLF}`);
}
