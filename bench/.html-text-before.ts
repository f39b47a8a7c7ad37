/**
 * The one HTML-to-text of the project: the search index and screening read `htmlToPlain`, the
 * text alternative of an HTML-only send is `htmlToText`. No imports, so scripts can load this file
 * directly in Node (bench/sender-auth.mjs runs the phishing scorer, which uses it).
 */

/**
 * Visible text of an HTML body, for the search index when a message has no text part. Reads at
 * most `maxChars` of input and makes one linear pass (no backtracking regex over hostile HTML).
 */
export function htmlToPlain(html: string, maxChars = 64 * 1024): string {
  const input = html.slice(0, maxChars);
  let out = "";
  let i = 0;
  while (i < input.length) {
    const lt = input.indexOf("<", i);
    if (lt === -1) {
      out += input.slice(i);
      break;
    }
    out += `${input.slice(i, lt)} `;
    const gt = input.indexOf(">", lt);
    if (gt === -1) break;
    const tag = /^<\s*(script|style|head)\b/i.exec(input.slice(lt, lt + 8))?.[1]?.toLowerCase();
    i = gt + 1;
    if (tag) {
      // Skip to the matching close tag (or to the end when it never closes): one indexOf.
      const close = input.toLowerCase().indexOf(`</${tag}`, i);
      i = close === -1 ? input.length : close;
    }
  }
  return decodeEntities(out).replace(/\s+/g, " ").trim();
}

/** The HTML entities mail bodies use for text (named basics and decimal references). */
export function decodeEntities(s: string): string {
  return s
    .replace(/&nbsp;/gi, " ")
    .replace(/&lt;/gi, "<")
    .replace(/&gt;/gi, ">")
    .replace(/&quot;/gi, '"')
    .replace(/&#(\d{1,7});/g, (_, n) => String.fromCodePoint(Math.min(Number(n), 0x10ffff)))
    .replace(/&amp;/gi, "&");
}

/**
 * A plain-text alternative for an HTML-only message: block ends become line breaks, links keep
 * their target, tags and scripts go. One linear pass per step (the input is the caller's HTML).
 */
export function htmlToText(html: string): string {
  const NL = "\uE000";
  let href: string | null = null;
  const marked = html
    .slice(0, 2 * 1024 * 1024)
    // Links read as "text (url)": anchors do not nest, so the last opening href is the one closing.
    .replace(/<a\s[^>]*?href\s*=\s*["']?([^"'\s>]+)["']?[^>]*>|<\/a\s*>/gi, (m: string, target?: string) => {
      if (!m.startsWith("</")) {
        href = target && /^(https?|mailto):/i.test(target) ? target : null;
        return "";
      }
      const out = href ? ` (${href.replace(/^mailto:/i, "")})` : "";
      href = null;
      return out;
    })
    .replace(/<br\s*\/?>/gi, NL)
    .replace(/<\/(p|div|h[1-6]|li|tr|blockquote|pre|table|ul|ol)\s*>/gi, NL + NL)
    .replace(/<li[\s>]/gi, (m) => `${NL}- ${m}`);
  return htmlToPlain(marked, marked.length)
    .replace(/ ?\uE000 ?/g, "\n")
    .replace(/\n{3,}/g, "\n\n")
    .trim();
}
