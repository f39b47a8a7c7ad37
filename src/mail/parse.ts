import PostalMime, { type Address, addressParser, decodeWords, type Email } from "postal-mime";

/** Verdicts of the receiving side's Authentication-Results (inbound mail only). */
export interface AuthVerdicts {
  spf: string | null;
  dkim: string | null;
  dmarc: string | null;
  authserv_id: string;
}

import { bytesToLatin1 } from "../lib/crypto";
import { rawAttachments } from "./raw-parts";

/**
 * The parse wrapper: raw RFC 5322 bytes in, the fields mailbot stores out. It never throws for
 * bad mail; a message postal-mime cannot parse comes back with `parseError` and whatever the
 * header block still tells us.
 */

export interface ParsedAttachment {
  filename: string | null;
  contentType: string;
  disposition: "attachment" | "inline";
  contentId: string | null;
  content: Uint8Array;
}

export interface ParsedMail {
  fromAddress: string | null;
  fromName: string | null;
  to: string[];
  cc: string[];
  replyTo: string | null;
  subject: string | null;
  bodyText: string | null;
  bodyHtml: string | null;
  headers: Record<string, string | string[]>;
  headersTruncated: boolean;
  rfcMessageId: string | null;
  inReplyTo: string | null;
  references: string[];
  attachments: ParsedAttachment[];
  /** Parts beyond ATTACHMENT_LIMIT: not stored separately (they stay in the raw message). */
  attachmentsOmitted: number;
  /** Topmost content type, lower-cased, with its report-type when it is a report. */
  reportType: "delivery_status" | "feedback" | null;
  autoSubmitted: string | null;
  parseError: string | null;
  /** The parsed structure, kept for report recognition (null when parsing failed). */
  email: Email | null;
}

/** postal-mime's own limits are generous; these keep a hostile message from exhausting the isolate. */
export const PARSE_OPTIONS = {
  attachmentEncoding: "arraybuffer",
  rfc822Attachments: true,
  maxNestingDepth: 128,
  maxHeadersSize: 2 * 1024 * 1024,
  maxRfc822NestingDepth: 5,
} as const;

/** Stored subjects are cut here (the full header stays in `headers` and the raw message). */
const SUBJECT_LIMIT = 2000;
/** At most this many parts become attachment objects; a mail with more keeps the rest in its raw bytes. */
const ATTACHMENT_LIMIT = 100;
/** At most this many addresses per To / Cc list are kept as fields. */
const ADDRESS_LIST_LIMIT = 500;

/** Trims and cuts a decoded string; empty becomes null. */
function clip(value: string | null | undefined, max: number): string | null {
  const v = value?.trim();
  return v ? v.slice(0, max) : null;
}

/**
 * Index of the blank line that ends the header block (the first `\n\n` or `\n\r\n`), searched
 * in the bytes so nothing of the body is decoded; -1 when there is none within `limit` bytes.
 */
function headerEnd(raw: Uint8Array, limit = raw.length): number {
  const stop = Math.min(raw.length, limit);
  for (let i = raw.indexOf(10); i !== -1 && i + 1 < stop; i = raw.indexOf(10, i + 1)) {
    if (raw[i + 1] === 10 || (raw[i + 1] === 13 && raw[i + 2] === 10)) return i;
  }
  return -1;
}

/** Bytes after the header block (0 when there is no body). */
function bodyLength(raw: Uint8Array): number {
  const end = headerEnd(raw);
  if (end === -1) return 0;
  return raw.length - end - (raw[end + 1] === 10 ? 2 : 3);
}

const utf8 = new TextEncoder();

/** JSON of the headers object is capped so a row stays far below D1's 2 MB. */
const HEADERS_JSON_LIMIT = 256 * 1024;

/** Parses raw mail; never throws. */
export async function parseMail(raw: Uint8Array): Promise<ParsedMail> {
  let email: Email;
  try {
    email = await PostalMime.parse(raw, PARSE_OPTIONS);
  } catch (err) {
    return fromHeaderBlock(raw, err instanceof Error ? err.message : String(err));
  }
  const headerPairs = email.headers.map((h) => ({ key: h.key, value: h.value }));
  const { headers, truncated } = headerObject(headerPairs);
  const from = firstMailbox(email.from);
  const contentType = first(header(headers, "content-type"));
  const reportType = reportTypeOf(contentType);
  // postal-mime reads a multipart with no usable boundary as an empty message without an error;
  // say so, since its content then exists only in the raw bytes.
  const exact = exactContents(raw, email);
  const lostBody =
    /^\s*multipart\//i.test(contentType ?? "") &&
    !email.text &&
    !email.html &&
    email.attachments.length === 0 &&
    bodyLength(raw) > 0;
  return {
    fromAddress: clip(from?.address, 320),
    fromName: clip(from?.name, 300),
    to: addresses(email.to),
    cc: addresses(email.cc),
    replyTo: addresses(email.replyTo)[0] ?? null,
    // A Subject header that is there but empty reads as "", a missing one as null.
    subject: header(headers, "subject") === undefined ? null : (email.subject ?? "").trim().slice(0, SUBJECT_LIMIT),
    bodyText: email.text ?? null,
    bodyHtml: email.html ?? null,
    headers,
    headersTruncated: truncated,
    rfcMessageId: normalizeMessageId(email.messageId),
    inReplyTo: messageIdList(email.inReplyTo)[0] ?? null,
    references: messageIdList(email.references),
    attachments: email.attachments.slice(0, ATTACHMENT_LIMIT).map((a, i) => ({
      filename: clip(a.filename, 255),
      contentType: a.mimeType && a.mimeType.length <= 255 ? a.mimeType : "application/octet-stream",
      disposition:
        a.disposition === "inline" || (a.related && a.disposition !== "attachment") ? "inline" : "attachment",
      contentId: a.contentId && a.contentId.length <= MESSAGE_ID_LIMIT ? a.contentId : null,
      content: exact[i] ?? toBytes(a.content),
    })),
    reportType,
    attachmentsOmitted: Math.max(0, email.attachments.length - ATTACHMENT_LIMIT),
    autoSubmitted: autoSubmittedMarker(headers, reportType),
    parseError: lostBody ? "multipart message without a usable boundary: its body is only in the raw message" : null,
    email,
  };
}

/**
 * Each attachment's bytes exactly as its part decodes, taken from the raw message (see
 * raw-parts.ts), when the raw walk finds the same attachments as the parser; otherwise none.
 */
function exactContents(raw: Uint8Array, email: Email): (Uint8Array | undefined)[] {
  if (email.attachments.length === 0) return [];
  for (const inline of [true, false]) {
    let found: ReturnType<typeof rawAttachments>;
    try {
      found = rawAttachments(raw, inline);
    } catch {
      return [];
    }
    if (
      found.length === email.attachments.length &&
      found.every((f, i) => f.contentType === (email.attachments[i]?.mimeType ?? "").toLowerCase())
    ) {
      return found.map((f) => f.content);
    }
  }
  return [];
}

/** The least a message can be stored as: what its header block says, no bodies or parts. */
export function minimalMail(raw: Uint8Array, reason: string): ParsedMail {
  const mail = fromHeaderBlock(raw, reason);
  return { ...mail, headers: {}, headersTruncated: true, references: mail.references.slice(-20) };
}

/** What the header block alone says, for mail the MIME parser refused. */
function fromHeaderBlock(raw: Uint8Array, parseError: string): ParsedMail {
  const pairs = rawHeaderPairs(raw);
  const { headers, truncated } = headerObject(pairs);
  const decode = (v: string | undefined) => {
    if (v === undefined) return null;
    try {
      return decodeWords(v).trim();
    } catch {
      return v.trim();
    }
  };
  const parseAddresses = (key: string): Address[] => {
    try {
      return addressParser(first(header(headers, key)) ?? "");
    } catch {
      return [];
    }
  };
  const from = firstMailbox(parseAddresses("from")[0]);
  const reportType = reportTypeOf(first(header(headers, "content-type")));
  return {
    fromAddress: clip(from?.address, 320),
    fromName: clip(from?.name ? decode(from.name) : null, 300),
    to: addresses(parseAddresses("to")),
    cc: addresses(parseAddresses("cc")),
    replyTo: addresses(parseAddresses("reply-to"))[0] ?? null,
    subject:
      header(headers, "subject") === undefined
        ? null
        : (decode(first(header(headers, "subject"))) ?? "").slice(0, SUBJECT_LIMIT),
    bodyText: null,
    bodyHtml: null,
    headers,
    headersTruncated: truncated,
    rfcMessageId: normalizeMessageId(first(header(headers, "message-id"))),
    inReplyTo: messageIdList(first(header(headers, "in-reply-to")))[0] ?? null,
    references: messageIdList(first(header(headers, "references"))),
    attachments: [],
    attachmentsOmitted: 0,
    reportType,
    autoSubmitted: autoSubmittedMarker(headers, reportType),
    parseError: parseError.slice(0, 500) || "unparseable message",
    email: null,
  };
}

/** Header lines of the raw block (unfolded), read as latin-1 so no byte sequence can throw. */
export function rawHeaderPairs(
  raw: Uint8Array,
  maxBytes = PARSE_OPTIONS.maxHeadersSize,
): { key: string; value: string }[] {
  const end = headerEnd(raw, maxBytes);
  const block = bytesToLatin1(raw.subarray(0, end === -1 ? Math.min(raw.byteLength, maxBytes) : end));
  const pairs: { key: string; value: string }[] = [];
  for (const line of block.split(/\r?\n(?![ \t])/)) {
    const i = line.indexOf(":");
    if (i <= 0) continue;
    const key = line.slice(0, i).trim().toLowerCase();
    if (!/^[\x21-\x39\x3b-\x7e]+$/.test(key)) continue;
    pairs.push({
      key,
      value: line
        .slice(i + 1)
        .replace(/\r?\n[ \t]+/g, " ")
        .trim(),
    });
  }
  return pairs;
}

/**
 * What makes two copies of a mail the same mail: SHA-256 over its From, To, Cc, Subject, Date and
 * Message-ID values and its body bytes. Received, ARC and other trace headers a redelivery may
 * change are left out; a forgery reusing a Message-ID with any other content differs.
 */
export async function messageFingerprint(raw: Uint8Array): Promise<string> {
  const pairs = rawHeaderPairs(raw);
  const keep = ["from", "to", "cc", "subject", "date", "message-id"];
  const summary = keep.map((k) => `${k}:${pairs.find((p) => p.key === k)?.value ?? ""}`).join("\n");
  const end = headerEnd(raw);
  const body = end === -1 ? new Uint8Array() : raw.subarray(end + (raw[end + 1] === 10 ? 2 : 3));
  const stream = new crypto.DigestStream("SHA-256");
  const writer = stream.getWriter();
  await writer.write(utf8.encode(`${summary}\n\n`));
  if (body.byteLength > 0) await writer.write(body);
  await writer.close();
  return `fp:${[...new Uint8Array(await stream.digest)].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** The Message-ID (normalised) of a raw message, from its header block, without a full parse. */
export function rawMessageId(raw: Uint8Array): string | null {
  const pair = rawHeaderPairs(raw, PARSE_OPTIONS.maxHeadersSize).find((p) => p.key === "message-id");
  return normalizeMessageId(pair?.value);
}

function headerObject(pairs: { key: string; value: string }[]): {
  headers: Record<string, string | string[]>;
  truncated: boolean;
} {
  // A Map, not an object literal: header names such as `__proto__` or `constructor` are data.
  const map = new Map<string, string | string[]>();
  let budget = HEADERS_JSON_LIMIT;
  let truncated = false;
  for (const { key, value } of pairs) {
    // Counted in bytes of the stored JSON (escapes and UTF-8 included), not in characters.
    const cost = utf8.encode(JSON.stringify(key) + JSON.stringify(value)).byteLength + 4;
    if (cost > budget) {
      truncated = true;
      continue;
    }
    budget -= cost;
    const current = map.get(key);
    if (current === undefined) map.set(key, value);
    else if (Array.isArray(current)) current.push(value);
    else map.set(key, [current, value]);
  }
  return { headers: Object.fromEntries(map), truncated };
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** Own property only: `headers.constructor` must not find Object's. */
function header(headers: Record<string, string | string[]>, key: string): string | string[] | undefined {
  return Object.hasOwn(headers, key) ? headers[key] : undefined;
}

/** Attachment content as bytes, whatever form postal-mime returned it in. */
export function toBytes(content: ArrayBuffer | Uint8Array | string): Uint8Array {
  if (typeof content === "string") return new TextEncoder().encode(content);
  return content instanceof Uint8Array ? content : new Uint8Array(content);
}

function firstMailbox(addr: Address | undefined): { address: string; name: string } | null {
  if (!addr) return null;
  if (addr.group)
    return addr.group[0] ? { address: addr.group[0].address.toLowerCase(), name: addr.group[0].name } : null;
  return addr.address ? { address: addr.address.toLowerCase(), name: addr.name } : null;
}

/** Bare, lower-cased addresses (groups flattened, empties dropped). */
function addresses(list: Address[] | undefined): string[] {
  const out: string[] = [];
  for (const a of list ?? []) {
    for (const m of a.group ?? [a]) {
      if (m.address?.includes("@") && m.address.length <= 320) out.push(m.address.toLowerCase());
    }
  }
  return [...new Set(out)].slice(0, ADDRESS_LIST_LIMIT);
}

/** Longest message id kept (RFC 5322 lines are at most 998 characters); longer ones are ignored. */
const MESSAGE_ID_LIMIT = 998;

/** `<id@host>` form, trimmed; a bare `id@host` gets its brackets. */
export function normalizeMessageId(value: string | null | undefined): string | null {
  if (!value) return null;
  const inBrackets = /<([^<>\s]+)>/.exec(value.slice(0, 4 * MESSAGE_ID_LIMIT));
  const id = inBrackets?.[1] ?? value.trim().split(/\s+/)[0];
  return id && id.length <= MESSAGE_ID_LIMIT ? `<${id}>` : null;
}

/** Every `<id>` of an In-Reply-To / References value, in order. */
export function messageIdList(value: string | null | undefined): string[] {
  if (!value) return [];
  const ids = [...value.matchAll(/<([^<>\s]+)>/g)]
    .filter((m) => (m[1]?.length ?? 0) <= MESSAGE_ID_LIMIT)
    .map((m) => `<${m[1]}>`);
  if (ids.length === 0) {
    const bare = normalizeMessageId(value);
    return bare ? [bare] : [];
  }
  return ids.slice(-100);
}

function reportTypeOf(contentType: string | undefined): ParsedMail["reportType"] {
  if (!contentType || !/^\s*multipart\/report/i.test(contentType)) return null;
  const rt = /report-type\s*=\s*"?([\w-]+)/i.exec(contentType)?.[1]?.toLowerCase();
  if (rt === "delivery-status" || rt === "global-delivery-status") return "delivery_status";
  if (rt === "feedback-report") return "feedback";
  return null;
}

/**
 * Why this mail is automatic, or null when it looks written by a person. Agents use it to avoid
 * answering auto-replies, bounces and list mail (RFC 3834 and the de-facto Precedence header).
 */
function autoSubmittedMarker(headers: Record<string, string | string[]>, reportType: ParsedMail["reportType"]) {
  if (reportType === "delivery_status") return "delivery-status";
  if (reportType === "feedback") return "feedback-report";
  const auto = first(header(headers, "auto-submitted"))?.trim().toLowerCase().split(/[\s;]/)[0];
  if (auto && auto !== "no") return auto;
  const precedence = first(header(headers, "precedence"))?.trim().toLowerCase();
  if (precedence && ["bulk", "junk", "list", "auto_reply"].includes(precedence)) return `precedence-${precedence}`;
  if (header(headers, "x-autoreply") || header(headers, "x-autorespond")) return "auto-replied";
  if (header(headers, "list-id") || header(headers, "list-unsubscribe")) return "list";
  return null;
}

/** Strips Re:/Fwd: prefixes (several languages, counters like Re[2]:) for subject threading. */
export function subjectKey(subject: string | null): string | null {
  if (!subject) return null;
  let s = subject.trim();
  const prefix = /^(re|fw|fwd|aw|sv|vs|antw|wg|tr|rif|r|res|enc)\s*(\[\d+\]|\(\d+\))?\s*:\s*/i;
  for (let i = 0; i < 10 && prefix.test(s); i++) s = s.replace(prefix, "");
  s = s.replace(/\s+/g, " ").trim().toLowerCase();
  return s.length > 0 ? s.slice(0, 300) : null;
}

/**
 * The domain the trusted DMARC pass speaks for: `header.from=` of a `dmarc=pass` in the topmost
 * Authentication-Results, when its authserv-id is trusted (the same entry authenticationVerdicts
 * reads). Null when there is no such pass or it names no domain: a pass that does not say which
 * From it evaluated cannot vouch for the one this parser read.
 */
export function dmarcPassDomain(headers: Record<string, string | string[]>, trusted: string[]): string | null {
  const results = trustedResults(headers, trusted);
  for (const p of results?.methods ?? []) {
    if (!/^dmarc\s*=/i.test(p)) continue;
    if (!/^dmarc\s*=\s*pass\b/i.test(p)) return null;
    return /\bheader\.from\s*=\s*"?([^\s";]+)"?/i.exec(p)?.[1]?.toLowerCase() ?? null;
  }
  return null;
}

/**
 * Whether the message has exactly one From header naming exactly one mailbox (no group, no list):
 * with two From headers or several mailboxes, the receiver that evaluated DMARC and this parser
 * may each have read a different one.
 */
export function singleFromMailbox(headers: Record<string, string | string[]>): boolean {
  const v = header(headers, "from");
  if (v === undefined || Array.isArray(v)) return false;
  // One pass over the value: quoted strings (with their escapes) and comments (nested, with
  // escapes; a quote inside a comment is text) may hold any character; what is left is
  // addresses and syntax, where a second "@", a list's "," or a group's ":"/";" give it away.
  let ats = 0;
  let quoted = false;
  let depth = 0;
  for (let i = 0; i < v.length; i++) {
    const c = v[i];
    if (c === "\\" && (quoted || depth > 0)) {
      i++;
      continue;
    }
    if (quoted) {
      if (c === '"') quoted = false;
    } else if (depth > 0) {
      if (c === "(") depth++;
      else if (c === ")") depth--;
    } else if (c === '"') quoted = true;
    else if (c === "(") depth = 1;
    else if (c === "@") ats++;
    else if (c === "," || c === ":" || c === ";") return false;
  }
  return ats === 1 && !quoted && depth === 0;
}

/**
 * Verdicts from the topmost Authentication-Results header, when a trusted receiver wrote it.
 * Anyone can put such a header in a message, so only the topmost one counts (the one the last hop,
 * our receiver, prepended; a trusted id further down could have been written by the sender), and
 * only when its authserv-id is one the ingestion path trusts (the caller passes that path's list).
 * ARC-Authentication-Results are ignored: without verifying the ARC chain's seals, an ARC set is
 * just more headers the sender chose.
 */
export function authenticationVerdicts(
  headers: Record<string, string | string[]>,
  trusted: string[],
): AuthVerdicts | null {
  const results = trustedResults(headers, trusted);
  if (!results) return null;
  const verdict = (method: string) => {
    for (const p of results.methods) {
      const m = new RegExp(`^${method}\\s*=\\s*([a-z]+)`, "i").exec(p);
      if (m?.[1]) return m[1].toLowerCase();
    }
    return null;
  };
  return { spf: verdict("spf"), dkim: verdict("dkim"), dmarc: verdict("dmarc"), authserv_id: results.authservId };
}

/**
 * The topmost Authentication-Results header split into its method results (comments dropped),
 * when its authserv-id is trusted; null otherwise. Why only that one: see authenticationVerdicts.
 */
function trustedResults(
  headers: Record<string, string | string[]>,
  trusted: string[],
): { authservId: string; methods: string[] } | null {
  const v = header(headers, "authentication-results");
  const value = Array.isArray(v) ? v[0] : v;
  if (value === undefined) return null;
  const parts = value
    .replace(/\([^()]*\)/g, " ")
    .split(";")
    .map((p) => p.trim());
  const authservId = parts[0]?.split(/\s+/)[0]?.toLowerCase();
  if (!authservId || !trusted.includes(authservId)) return null;
  return { authservId, methods: parts.slice(1) };
}
