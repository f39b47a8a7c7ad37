/**
 * The one HTML-to-text of the project: the search index and screening read `htmlToPlain`, the
 * text alternative of an HTML-only send is `htmlToText`. No imports, so scripts can load this file
 * directly in Node (bench/sender-auth.mjs runs the phishing scorer, which uses it).
 *
 * Both are one left-to-right walk over the input: each `<` and `>` is found with `indexOf` from
 * where the walk stands, a tag's name and `href` are read with anchored patterns on that tag
 * alone, and a `<script>`/`<style>`/`<head>` skips to its close with one search in a lower-cased
 * copy made once. No regular expression runs over the document with a backtracking pattern, so
 * hostile input (`"<a ".repeat(n)`, `"<head></head>".repeat(n)`) costs linear time, and the input
 * is cut at a fixed size first (bench/html-text.mjs prints the 2 MiB worst cases).
 */

/** Most HTML `htmlToText` reads (the rest of a larger body is left out of the text part). */
export const HTML_TEXT_LIMIT = 2 * 1024 * 1024;

/** Line-break marker that survives whitespace folding (a private-use character, not `\s`). */
const NL = "\uE000";
/** Tags whose content is never text. */
const SKIPPED = new Set(["script", "style", "head"]);
/** Closing these ends a paragraph. */
const BLOCKS = new Set([
  "p",
  "div",
  "h1",
  "h2",
  "h3",
  "h4",
  "h5",
  "h6",
  "li",
  "tr",
  "blockquote",
  "pre",
  "table",
  "ul",
  "ol",
]);
/** A link target inside one tag's text. */
const HREF = /\shref\s*=\s*["']?([^"'\s>]+)/i;

/** Longest tag text examined for an href (longer tags are still skipped whole). */
const TAG_SCAN = 4096;

const isSpace = (c: number) => c === 32 || (c >= 9 && c <= 13);
const isNameChar = (c: number) => (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || (c >= 65 && c <= 90);

function walk(input: string, marks: boolean): string {
  const lower = input.toLowerCase();
  const out: string[] = [];
  let href: string | null = null;
  let i = 0;
  while (i < input.length) {
    const lt = input.indexOf("<", i);
    if (lt === -1) {
      out.push(text(input.slice(i)));
      break;
    }
    if (lt > i) out.push(text(input.slice(i, lt)));
    out.push(" ");
    const gt = input.indexOf(">", lt);
    // An unclosed tag ends the text (a browser would not show it either).
    if (gt === -1) break;
    i = gt + 1;
    // The tag's name, read by hand within this tag only: `<name`, `< / name`.
    let j = lt + 1;
    while (j < gt && isSpace(input.charCodeAt(j))) j++;
    const closing = input.charCodeAt(j) === 47;
    if (closing) {
      j++;
      while (j < gt && isSpace(input.charCodeAt(j))) j++;
    }
    const start = j;
    while (j < gt && isNameChar(input.charCodeAt(j))) j++;
    if (j === start || input.charCodeAt(start) <= 57) continue;
    const name = lower.slice(start, j);
    if (!closing && SKIPPED.has(name)) {
      const close = lower.indexOf(`</${name}`, i);
      i = close === -1 ? input.length : close;
      continue;
    }
    if (!marks) continue;
    if (name === "br") out.push(NL);
    else if (closing && BLOCKS.has(name)) out.push(NL + NL);
    else if (!closing && name === "li") out.push(`${NL}- `);
    else if (name === "a") {
      if (!closing) {
        // Anchors do not nest: the last opening href is the one the closing tag shows.
        const target = HREF.exec(input.slice(j, Math.min(gt, j + TAG_SCAN)))?.[1];
        href = target && /^(https?|mailto):/i.test(target) ? target : null;
      } else {
        if (href) out.push(` (${text(href.replace(/^mailto:/i, ""))})`);
        href = null;
      }
    }
  }
  return fold(out);
}

/** A text segment with its entities decoded (only segments that have any pay for it). */
function text(segment: string): string {
  return segment.includes("&") ? decodeEntities(segment) : segment;
}

/** What `\s` matches in a JavaScript pattern. */
function isWhitespace(c: number): boolean {
  if (c <= 32) return c === 32 || (c >= 9 && c <= 13);
  if (c < 0xa0) return false;
  return (
    c === 0xa0 ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000 ||
    c === 0xfeff
  );
}

/**
 * Joins the pieces with each whitespace run folded to one space and each run of line-break
 * markers (with the spaces around them) to one or two newlines, trimmed: one pass by hand, where
 * the same by regular expressions took several passes over megabytes.
 */
function fold(pieces: string[]): string {
  const out: string[] = [];
  let space = false;
  let breaks = 0;
  for (const piece of pieces) {
    // The separators the walk adds are most pieces: no character loop for them.
    if (piece === " ") {
      space = true;
      continue;
    }
    if (piece === NL || piece === NL + NL) {
      breaks += piece.length;
      continue;
    }
    let a = 0;
    for (let k = 0; k <= piece.length; k++) {
      const c = k < piece.length ? piece.charCodeAt(k) : -1;
      const isBreak = c === 0xe000;
      if (c !== -1 && !isBreak && !isWhitespace(c)) continue;
      if (k > a) {
        if (out.length > 0) {
          if (breaks > 0) out.push(breaks > 1 ? "\n\n" : "\n");
          else if (space) out.push(" ");
        }
        out.push(piece.slice(a, k));
        space = false;
        breaks = 0;
      }
      if (isBreak) breaks++;
      else if (c !== -1) space = true;
      a = k + 1;
    }
  }
  return out.join("");
}

/**
 * Visible text of an HTML body, for the search index when a message has no text part. Reads at
 * most `maxChars` of input, in one linear pass.
 */
export function htmlToPlain(html: string, maxChars = 64 * 1024): string {
  return walk(html.slice(0, maxChars), false);
}

/** The HTML entities mail bodies use for text (named basics and decimal references), in one pass. */
export function decodeEntities(s: string): string {
  return s.replace(ENTITY, (_, name: string) => {
    const named = NAMED[name.toLowerCase()];
    if (named !== undefined) return named;
    return String.fromCodePoint(Math.min(Number(name.slice(1)), 0x10ffff));
  });
}
const ENTITY = /&(nbsp|lt|gt|quot|amp|#\d{1,7});/gi;
const NAMED: Record<string, string> = { nbsp: " ", lt: "<", gt: ">", quot: '"', amp: "&" };

/**
 * A plain-text alternative for an HTML-only message: block ends become line breaks, links keep
 * their target, tags and scripts go. One linear pass over at most HTML_TEXT_LIMIT characters.
 */
export function htmlToText(html: string): string {
  return walk(html.slice(0, HTML_TEXT_LIMIT), true);
}
