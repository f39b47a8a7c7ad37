/**
 * The decoded bytes of a message's attachment parts, read from the raw message itself. The MIME
 * parser (postal-mime) changes some parts' bytes: it rewrites line ends of parts without an
 * encoding (7bit, 8bit, binary) to LF, appends a newline, and normalises text/calendar. An
 * attachment must be exactly the part's decoded content, so the parse wrapper takes the bytes
 * from here whenever this walk finds the same attachments (same count, same types, same order)
 * as the parser did, and keeps the parser's otherwise.
 */
import { bytesToLatin1, fromBase64 } from "../lib/crypto";

export interface RawAttachment {
  contentType: string;
  content: Uint8Array;
}

/** Deepest nesting walked (postal-mime's own limits are lower in practice). */
const MAX_DEPTH = 64;

interface Part {
  /** Offsets into the whole message (latin-1 string indices are byte offsets). */
  start: number;
  end: number;
}

function headerBlockEnd(s: string, start: number, end: number): { headersEnd: number; bodyStart: number } {
  if (s.startsWith("\r\n", start)) return { headersEnd: start, bodyStart: start + 2 };
  if (s.startsWith("\n", start)) return { headersEnd: start, bodyStart: start + 1 };
  const lf = s.indexOf("\n\n", start);
  const crlf = s.indexOf("\n\r\n", start);
  const candidates = [lf === -1 || lf >= end ? -1 : lf, crlf === -1 || crlf >= end ? -1 : crlf].filter((i) => i !== -1);
  if (candidates.length === 0) return { headersEnd: end, bodyStart: end };
  const at = Math.min(...candidates);
  return { headersEnd: at, bodyStart: at + (s[at + 1] === "\n" ? 2 : 3) };
}

function headers(block: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const line of block.split(/\r?\n(?![ \t])/)) {
    const i = line.indexOf(":");
    if (i <= 0) continue;
    const key = line.slice(0, i).trim().toLowerCase();
    if (!map.has(key))
      map.set(
        key,
        line
          .slice(i + 1)
          .replace(/\r?\n[ \t]+/g, " ")
          .trim(),
      );
  }
  return map;
}

function param(value: string, name: string): string | null {
  const m = new RegExp(`;\\s*${name}\\s*=\\s*(?:"([^"]*)"|([^;\\s]+))`, "i").exec(value);
  return m ? (m[1] ?? m[2] ?? null) : null;
}

/** Parts of a multipart body between its delimiter lines (RFC 2046 §5.1.1). */
function splitMultipart(s: string, start: number, end: number, boundary: string): Part[] {
  const delim = `--${boundary}`;
  const isDelim = (at: number) => {
    const next = s[at + delim.length];
    return next === undefined || next === "-" || next === "\r" || next === "\n" || next === " " || next === "\t";
  };
  const find = (from: number): number => {
    for (let i = s.indexOf(`\n${delim}`, from); i !== -1 && i < end; i = s.indexOf(`\n${delim}`, i + 1)) {
      if (isDelim(i + 1)) return i;
    }
    return -1;
  };
  const parts: Part[] = [];
  let line =
    s.startsWith(delim, start) && isDelim(start)
      ? start
      : (() => {
          const i = find(start);
          return i === -1 ? -1 : i + 1;
        })();
  while (line !== -1 && line < end) {
    if (s.startsWith("--", line + delim.length)) break;
    const eol = s.indexOf("\n", line);
    if (eol === -1 || eol >= end) break;
    const next = find(eol);
    const partEnd = next === -1 ? end : Math.max(eol + 1, s[next - 1] === "\r" ? next - 1 : next);
    parts.push({ start: eol + 1, end: partEnd });
    if (next === -1) break;
    line = next + 1;
  }
  return parts;
}

export function decodeBase64(text: string): Uint8Array | null {
  // Well-formed base64 (line breaks skipped, padding only at the end) decodes as it is: the same
  // bytes the stripped text gives, without copying a whole attachment through a regex first (that
  // copy was most of this walk's cost). Anything else is decoded forgivingly, stray characters
  // and inner padding removed.
  try {
    return fromBase64(text);
  } catch {
    // not well-formed: below
  }
  const clean = text.replace(/[^A-Za-z0-9+/]/g, "");
  if (clean.length % 4 === 1) return null;
  try {
    return fromBase64(clean);
  } catch {
    return null;
  }
}

/** Quoted-printable: soft breaks removed, `=XX` decoded, trailing blanks of lines dropped, line ends kept. */
function decodeQuotedPrintable(text: string): Uint8Array {
  const lines = text.split(/(\r?\n)/);
  const out: number[] = [];
  for (let k = 0; k < lines.length; k += 2) {
    let line = (lines[k] ?? "").replace(/[ \t]+$/, "");
    const eol = lines[k + 1] ?? "";
    const soft = line.endsWith("=");
    if (soft) line = line.slice(0, -1);
    for (let i = 0; i < line.length; i++) {
      const c = line.charCodeAt(i);
      if (c === 61 && /^[0-9A-Fa-f]{2}$/.test(line.slice(i + 1, i + 3))) {
        out.push(Number.parseInt(line.slice(i + 1, i + 3), 16));
        i += 2;
      } else out.push(c & 0xff);
    }
    if (!soft) for (let i = 0; i < eol.length; i++) out.push(eol.charCodeAt(i));
  }
  return Uint8Array.from(out);
}

function walk(s: string, part: Part, depth: number, inlineRfc822: boolean, out: RawAttachment[]): void {
  if (depth > MAX_DEPTH) return;
  const { headersEnd, bodyStart } = headerBlockEnd(s, part.start, part.end);
  const h = headers(s.slice(part.start, headersEnd));
  const ctHeader = h.get("content-type") ?? "";
  const type = ctHeader.split(";")[0]?.trim().toLowerCase() || "text/plain";
  const disposition = (h.get("content-disposition") ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
  if (type.startsWith("multipart/")) {
    const boundary = param(ctHeader, "boundary");
    if (!boundary) return;
    for (const p of splitMultipart(s, bodyStart, part.end, boundary)) walk(s, p, depth + 1, inlineRfc822, out);
    return;
  }
  if (inlineRfc822 && type === "message/rfc822" && disposition === "inline") {
    walk(s, { start: bodyStart, end: part.end }, depth + 1, inlineRfc822, out);
    return;
  }
  if ((type === "text/plain" || type === "text/html") && disposition !== "attachment") return;
  const body = s.slice(bodyStart, Math.max(bodyStart, part.end));
  const cte = (h.get("content-transfer-encoding") ?? "")
    .replace(/\([^)]*\)/g, "")
    .trim()
    .toLowerCase();
  let content: Uint8Array | null;
  if (cte.includes("base64")) content = decodeBase64(body);
  else if (cte.includes("quoted-printable")) content = decodeQuotedPrintable(body);
  else {
    content = new Uint8Array(body.length);
    for (let i = 0; i < body.length; i++) content[i] = body.charCodeAt(i);
  }
  if (!content) return;
  out.push({ contentType: type, content });
}

/**
 * The attachment parts of `raw` in document order, decoded from the raw bytes. `inlineRfc822`
 * says whether `message/rfc822` parts with `Content-Disposition: inline` are walked into (as the
 * parser does for ordinary mail) or kept whole (as it does in reports).
 */
export function rawAttachments(raw: Uint8Array, inlineRfc822: boolean): RawAttachment[] {
  const s = bytesToLatin1(raw);
  const out: RawAttachment[] = [];
  walk(s, { start: 0, end: s.length }, 0, inlineRfc822, out);
  return out;
}
