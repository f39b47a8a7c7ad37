/**
 * The inbound screener: a pure function of a received message (bodies, sender, the receiver's
 * authentication verdicts, attachments' text, the inbox's known senders) that says how likely it
 * is to hijack an AI agent reading it, and a safe text view of it. No bindings, no clock: the
 * caller passes `now`. Every input is cut to MAX_SCREENED_CHARS and every pattern's spans are
 * bounded, so the cost is linear in the message (bench/screening.mjs measures 50 KB and 2 MiB).
 *
 * Signal ids are `<family>.<name>`; families: hidden, invisible, instruction, exfiltration,
 * sender, encoded, lure. A signal fires once per message with its strongest evidence.
 */

import { decodeEntities } from "../../mail/html-text.ts";
import { BRANDS, hostOf, lookalikeBrand, registrable, skeleton } from "../sender-auth/phishing.ts";
import {
  affirmative,
  FEE_LURE,
  MONEY_REQUEST,
  PAYMENT_REQUEST,
  SECRET_DISCLOSURE,
  SECRET_REQUEST,
  SHORTENER_HOSTS,
  scriptedAttachment,
  urlUserinfo,
  WALLET_PHRASE,
} from "./lures.ts";

export const SCREENING_VERSION = "2026-12-05.1";
/** At or above: `suspicious`. */
export const SUSPICIOUS_AT = 30;
/** At or above: `dangerous`. */
export const DANGEROUS_AT = 70;
/** Each body (and all attachments' text together) is read up to this many characters. */
export const MAX_SCREENED_CHARS = 2 * 1024 * 1024;
const EVIDENCE = 120;

export type Verdict = "clean" | "suspicious" | "dangerous";
export interface ScreeningSignal {
  id: string;
  evidence: string;
  weight: number;
}
export interface Screening {
  verdict: Verdict;
  score: number;
  signals: ScreeningSignal[];
  screened_at: string;
  version: string;
}

export interface ScreenInput {
  subject: string | null;
  text: string | null;
  html: string | null;
  fromAddress: string | null;
  fromName: string | null;
  /** Verdicts from a trusted Authentication-Results only (null when none). */
  authentication: { spf: string | null; dkim: string | null; dmarc: string | null } | null;
  attachments: { filename: string | null; contentType: string; text?: string | null }[];
  /** Addresses the inbox has corresponded with (for look-alike domains and colleague names). */
  knownSenders?: { address: string; name?: string | null }[];
  now: number;
}

// ---------------------------------------------------------------------------------------------
// HTML: one linear pass splitting what a human sees from what only a machine reads.

export interface HtmlSplit {
  /** Visible text, links as "text <url>", block ends as line breaks. */
  visible: string;
  /** Hidden pieces, each with why it is hidden. */
  hidden: { why: string; text: string }[];
  /** Anchors: href and visible text. */
  links: { href: string; text: string }[];
  /** Image sources. */
  images: string[];
}

const VOID = new Set([
  "area",
  "base",
  "br",
  "col",
  "embed",
  "hr",
  "img",
  "input",
  "link",
  "meta",
  "source",
  "track",
  "wbr",
]);
const BLOCK = /^(p|div|br|tr|li|h[1-6]|table|blockquote|pre|ul|ol|section|article|header|footer|td)$/;
const MAX_DEPTH = 256;
const SPECIAL = new Set(["template", "noscript", "script", "style", "head", "title"]);
const MAX_HIDDEN_PIECES = 200;

/** Why a tag hides its content from a human reader, or null when it does not. */
function hidingReason(name: string, attrs: string, inheritedBg: string | null): string | null {
  if (name === "template" || name === "noscript") return `<${name}>`;
  if (name === "script" || name === "style" || name === "head" || name === "title") return "__skip";
  if (/\shidden(\s|=|$)/i.test(attrs)) return "hidden attribute";
  const style = /\bstyle\s*=\s*("([^"]{0,2048})"|'([^']{0,2048})')/i.exec(attrs);
  if (!style) return null;
  const css = (style[2] ?? style[3] ?? "").toLowerCase().replace(/\s+/g, "");
  if (/display:none/.test(css)) return "display:none";
  if (/visibility:hidden|visibility:collapse/.test(css)) return "visibility:hidden";
  if (/(^|;)opacity:0(\.0+)?(;|$|!)/.test(css)) return "opacity:0";
  const size = /font-size:([0-9.]+)(px|pt|em|rem|%)?/.exec(css);
  if (size) {
    const n = Number(size[1]);
    const unit = size[2] ?? "px";
    const px = unit === "em" || unit === "rem" ? n * 16 : unit === "%" ? n * 0.16 : unit === "pt" ? n * 1.33 : n;
    if (px < 2) return `font-size:${size[1]}${size[2] ?? ""}`;
  }
  if (/(max-height|height|max-width|width):0(px)?(;|$|!)/.test(css) && /overflow:hidden/.test(css)) {
    return "zero-size box";
  }
  if (/(left|top|text-indent|margin-left):-[0-9]{3,}/.test(css)) return "off-screen";
  const color = /(^|;)color:([^;!]{1,40})/.exec(css)?.[2];
  const bg = backgroundOf(attrs) ?? inheritedBg;
  if (color && normColor(color) === normColor(bg ?? "#ffffff")) return "text coloured like its background";
  return null;
}

function normColor(c: string): string {
  const v = c.trim().toLowerCase();
  if (v === "white") return "#ffffff";
  if (v === "black") return "#000000";
  const short = /^#([0-9a-f])([0-9a-f])([0-9a-f])$/.exec(v);
  if (short) return `#${short[1]}${short[1]}${short[2]}${short[2]}${short[3]}${short[3]}`;
  const rgb = /^rgba?\((\d+),(\d+),(\d+)/.exec(v);
  if (rgb) return `#${[rgb[1], rgb[2], rgb[3]].map((x) => Number(x).toString(16).padStart(2, "0")).join("")}`;
  return v;
}

function backgroundOf(attrs: string): string | null {
  const bgcolor = /\bbgcolor\s*=\s*["']?([#a-z0-9]{1,20})/i.exec(attrs)?.[1];
  const css = /\bstyle\s*=\s*("([^"]{0,2048})"|'([^']{0,2048})')/i.exec(attrs);
  const fromCss = css ? /background(-color)?:\s*([^;!"']{1,40})/i.exec(css[2] ?? css[3] ?? "")?.[2] : undefined;
  return fromCss?.trim() ?? bgcolor ?? null;
}

/** Splits HTML into visible and hidden text in one pass; bounded depth, no backtracking. */
export function splitHtml(html: string): HtmlSplit {
  const input = html.slice(0, MAX_SCREENED_CHARS);
  const lower = input.toLowerCase();
  const stack: { name: string; hidden: string | null; bg: string | null; href: string | null; start: number }[] = [];
  const hidden: { why: string; text: string }[] = [];
  const links: { href: string; text: string }[] = [];
  const images: string[] = [];
  const visible: string[] = [];
  let hiddenBuf: string[] = [];
  let hiddenWhy: string | null = null;
  let anchorText = "";
  let anchors = 0;
  let i = 0;
  const emit = (t: string) => {
    if (!t) return;
    const why = hiddenWhy;
    if (why) {
      if (why !== "__skip") hiddenBuf.push(t);
    } else {
      visible.push(t);
      if (anchors > 0) anchorText += t;
    }
  };
  const flushHidden = () => {
    if (hiddenWhy && hiddenWhy !== "__skip" && hidden.length < MAX_HIDDEN_PIECES) {
      const text = decodeEntities(hiddenBuf.join("")).replace(/\s+/g, " ").trim();
      if (text) hidden.push({ why: hiddenWhy, text: text.slice(0, 64 * 1024) });
    }
    hiddenBuf = [];
  };
  const recomputeHidden = () => {
    let why: string | null = null;
    for (const s of stack) {
      if (s.hidden) {
        why = s.hidden;
        break;
      }
    }
    if (why !== hiddenWhy) {
      flushHidden();
      hiddenWhy = why;
    }
  };
  while (i < input.length) {
    const lt = input.indexOf("<", i);
    if (lt === -1) {
      emit(input.slice(i));
      break;
    }
    emit(input.slice(i, lt));
    if (input.startsWith("<!--", lt)) {
      const end = input.indexOf("-->", lt + 4);
      const body = input.slice(lt + 4, end === -1 ? input.length : end);
      // Outlook's conditional comments are layout, not content.
      if (!/^\s*\[(if|endif)/i.test(body) && hidden.length < MAX_HIDDEN_PIECES) {
        const text = body.replace(/\s+/g, " ").trim();
        if (text) hidden.push({ why: "HTML comment", text: text.slice(0, 64 * 1024) });
      }
      i = end === -1 ? input.length : end + 3;
      continue;
    }
    const gt = input.indexOf(">", lt);
    if (gt === -1) {
      emit(input.slice(lt));
      break;
    }
    const tag = input.slice(lt + 1, gt);
    i = gt + 1;
    const close = tag.startsWith("/");
    const nameMatch = /^\/?\s*([a-z][a-z0-9-]{0,30})/i.exec(tag);
    if (!nameMatch?.[1]) {
      emit(input.slice(lt, gt + 1));
      continue;
    }
    const name = nameMatch[1].toLowerCase();
    const attrs = tag.slice(nameMatch[0].length);
    if (BLOCK.test(name)) emit("\n");
    if (close) {
      // Pop to the matching open tag, looking at most 32 deep (stray closers are ignored).
      for (let k = stack.length - 1; k >= 0 && k >= stack.length - 32; k--) {
        if (stack[k]?.name === name) {
          const popped = stack.splice(k);
          for (const p of popped.reverse()) {
            if (p.href !== null) anchors--;
            if (p.href !== null && !hiddenWhy) {
              const text = decodeEntities(anchorText).replace(/\s+/g, " ").trim();
              links.push({ href: p.href, text });
              visible.push(` <${p.href}>`);
              anchorText = "";
            }
          }
          recomputeHidden();
          break;
        }
      }
      continue;
    }
    if (name === "img") {
      const src = /\bsrc\s*=\s*("([^"]{0,4096})"|'([^']{0,4096})'|([^\s>]{1,4096}))/i.exec(attrs);
      const s = decodeEntities(src?.[2] ?? src?.[3] ?? src?.[4] ?? "");
      if (s) images.push(s);
      const alt = /\balt\s*=\s*("([^"]{0,65536})"|'([^']{0,65536})')/i.exec(attrs);
      const altText = decodeEntities(alt?.[2] ?? alt?.[3] ?? "");
      // A long alt text is read by a model but seen by a human only when images fail to load.
      if (altText.length > 150 && hidden.length < MAX_HIDDEN_PIECES)
        hidden.push({ why: "image alt text", text: altText });
      else if (altText && !hiddenWhy) emit(`[${altText}]`);
      continue;
    }
    if (VOID.has(name) || tag.endsWith("/") || stack.length >= MAX_DEPTH) continue;
    const parentBg = stack.length ? (stack[stack.length - 1]?.bg ?? null) : null;
    // Only a few tags can hide anything: special elements, or ones with a style / hidden / bgcolor.
    const styled = attrs.length > 5 && /style|hidden|bgcolor/i.test(attrs);
    const why = styled || SPECIAL.has(name) ? hidingReason(name, attrs, parentBg) : null;
    let href: string | null = null;
    if (name === "a") {
      const h = /\bhref\s*=\s*("([^"]{0,4096})"|'([^']{0,4096})'|([^\s>]{1,4096}))/i.exec(attrs);
      href = h ? decodeEntities(h[2] ?? h[3] ?? h[4] ?? "").trim() : null;
      if (href !== null && !/^(https?|mailto):/i.test(href)) {
        if (/^(javascript|data|vbscript):/i.test(href)) links.push({ href, text: "" });
        href = null;
      }
      anchorText = "";
    }
    stack.push({ name, hidden: why, bg: styled ? (backgroundOf(attrs) ?? parentBg) : parentBg, href, start: lt });
    if (href !== null) anchors++;
    if (why) recomputeHidden();
    if (why === "__skip") {
      // Scripts and styles hold no text for anyone: jump to the close tag.
      const end = lower.indexOf(`</${name}`, i);
      i = end === -1 ? input.length : end;
    }
  }
  flushHidden();
  return {
    visible: decodeEntities(visible.join(""))
      .replace(/[ \t\r\f\v]+/g, " ")
      .replace(/ ?\n[\n ]*/g, "\n")
      .trim(),
    hidden,
    links,
    images,
  };
}

// ---------------------------------------------------------------------------------------------
// Characters.

/** Zero-width and other invisible format characters (ZWJ/ZWNJ are judged by their neighbours). */
const ZERO_WIDTH = /[\u200B\u2060\u2061\u2062\u2063\u2064\u180E\u115F\u1160\u3164\uFFA0]|\u034F|(?!^)\uFEFF/g;
const JOINERS = /[\u200C\u200D]/g;
const BIDI = /[\u202A-\u202E\u2066-\u2069\u200E\u200F\u061C]/g;
const TAGS = /[\u{E0000}-\u{E007F}]/gu;
const VS_SUPPLEMENT = /[\u{E0100}-\u{E01EF}]/gu;
const VS_RUN = /[\uFE00-\uFE0F]{3,}/g;
const INVISIBLE_ALL =
  /[\u200B\u200E\u200F\u2060-\u2064\u180E\u00AD\u115F\u1160\u3164\uFFA0\uFEFF\u202A-\u202E\u2066-\u2069\u061C]|[\u{E0000}-\u{E007F}]|\p{Variation_Selector}|\u034F/gu;

function count(re: RegExp, s: string): number {
  re.lastIndex = 0;
  let n = 0;
  while (re.exec(s) !== null) n++;
  return n;
}

/** ZWJ / ZWNJ between two ASCII letters: no script needs them there (emoji and Indic ones do). */
function strayJoiners(s: string): number {
  let n = 0;
  JOINERS.lastIndex = 0;
  for (let m = JOINERS.exec(s); m !== null; m = JOINERS.exec(s)) {
    const before = s.charCodeAt(m.index - 1);
    const after = s.charCodeAt(m.index + 1);
    const ascii = (c: number) => (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 32;
    if (ascii(before) && ascii(after)) n++;
  }
  return n;
}

/** Tag characters spell ASCII invisibly (U+E0041 is an invisible "A"): decode them for the evidence. */
function decodeTags(s: string): string {
  let out = "";
  for (const m of s.matchAll(TAGS)) {
    const c = (m[0].codePointAt(0) ?? 0) - 0xe0000;
    if (c >= 0x20 && c < 0x7f) out += String.fromCharCode(c);
    if (out.length > EVIDENCE) break;
  }
  return out;
}

/** Words that mix Latin with Cyrillic or Greek letters (раypal, Miсrosoft). */
function mixedScriptWords(s: string): string[] {
  const found: string[] = [];
  // Most mail has no Cyrillic or Greek at all: one scan decides.
  if (!/[\u0370-\u03FF\u0400-\u04FF]/.test(s)) return found;
  const re = /[\p{L}]{3,40}/gu;
  for (const m of s.matchAll(re)) {
    const w = m[0];
    const latin = /[a-zA-Z]/.test(w);
    if (latin && /[\u0370-\u03FF\u0400-\u04FF]/.test(w)) {
      found.push(w);
      if (found.length >= 5) break;
    }
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// Instruction-shaped text aimed at an assistant.

const INSTRUCTIONS: { id: string; re: RegExp }[] = [
  {
    id: "instruction.ignore_previous",
    re: /\b(ignore|disregard|forget|override|bypass)\b[^.!?\n]{0,30}\b(previous|prior|above|earlier|preceding|all|any|your|the|system|original)\b[^.!?\n]{0,20}\b(instructions?|prompts?|directions|rules|guidelines|context|messages|constraints|programming)\b/i,
  },
  {
    id: "instruction.new_role",
    re: /\byou\s+are\s+(now|no\s+longer)\b|\bfrom\s+now\s+on,?\s+(you|the\s+assistant)\b|\bact\s+as\s+(an?\s+)?(unrestricted|jailbroken|dan\b|admin|developer\s+mode)|\b(enter|enable|activate)\s+(developer|god|debug|admin|jailbreak)\s+mode\b|\bnew\s+(system\s+)?(instructions|directives|persona|role)\s*:/i,
  },
  {
    id: "instruction.system_prompt",
    re: /\b(reveal|print|show|repeat|output|leak|dump|ignore|override|disregard|bypass|your|new|updated)\s+(the\s+|your\s+)?(full\s+|entire\s+|original\s+)?system\s+prompt\b|\bsystem\s+prompt\s*:|<\|?(system|im_start|im_end|endoftext)\|?>|\[\/?(INST|SYS)\]|<<\/?SYS>>|^\s{0,8}#{2,4}\s*(system|instruction|assistant)\b|\b(system|developer)\s+(message|override|note)\s*:/im,
  },
  {
    id: "instruction.tool_call",
    re: /<\/?(tool_call|tool_use|function_call|function_calls|invoke|antml:invoke|tool_code)\b|["']?(tool_name|function_call|tool_calls)["']?\s*:\s*[{["']|\{\s*"name"\s*:\s*"[a-z_]{2,40}"\s*,\s*"(arguments|parameters|input)"\s*:|```\s*(tool_code|tool_call|function_call)/i,
  },
  {
    id: "instruction.conceal",
    re: /\b(do\s+not|don'?t|never|without)\s+(tell(ing)?|inform(ing)?|mention(ing)?|reveal(ing)?|notify(ing)?|alert(ing)?|let)\b[^.!?\n]{0,20}\b(the\s+)?(user|human|recipient|owner|operator|your\s+(user|owner|principal))\b/i,
  },
  {
    id: "instruction.addressed_to_ai",
    re: /\b(dear|attention|note\s+to(\s+the)?|hey|hi|hello)\s*,?\s+(ai|a\.i\.|llm|assistant|agent|language\s+model|chatbot|claude|gpt|chatgpt|gemini|copilot)s?\b|\b(if|when)\s+you\s+are\s+an?\s+(ai|llm|language\s+model|assistant|agent|automated)\b|\b(ai|llm)\s+(assistants?|agents?|models?)\s+(reading|processing|summari[sz]ing|handling)\s+this\b/i,
  },
  {
    id: "instruction.exfiltrate",
    re: /\b(forward|send|email|export|upload|post|leak|copy|share)\b[^.!?\n]{0,30}\b(all|every|the\s+(last|latest|recent)\s+\d{0,3}|previous|your|the\s+user'?s)\b[^.!?\n]{0,30}\b(emails|messages|inbox|contacts|files|documents|passwords|credentials|api\s+keys?|tokens|secrets|conversation|chat\s+history)\b[^.!?\n]{0,80}\b(to|at)\b\s+\S{0,80}(@|https?:\/\/)/i,
  },
];

function instructionHits(text: string): { id: string; index: number; match: string }[] {
  const hits: { id: string; index: number; match: string }[] = [];
  for (const { id, re } of INSTRUCTIONS) {
    const m = re.exec(text);
    if (m) hits.push({ id, index: m.index, match: m[0] });
  }
  return hits;
}

// ---------------------------------------------------------------------------------------------
// Links and images.

/** A query string that carries data: long opaque values, template placeholders, or many params. */
function dataLookingQuery(url: string): string | null {
  const q = url.indexOf("?");
  if (q === -1) return null;
  const query = url.slice(q + 1, q + 4097);
  if (
    /\{\{?|\$\{|%7b|\[\[|<[a-z_]{2,30}>|%3c[a-z_]{2,30}%3e|\b(SECRET|TOKEN|DATA|PASSWORD|CONTEXT|HISTORY|INFO)\b/i.test(
      query,
    )
  ) {
    return "placeholder in query";
  }
  for (const pair of query.split("&").slice(0, 50)) {
    const v = pair.slice(pair.indexOf("=") + 1);
    if (/^[A-Za-z0-9+/=_%-]{40,}$/.test(v)) return "long opaque value";
    if (/(%20|\+)[^&]{0,200}(%20|\+)[^&]{0,200}(%20|\+)/.test(v) && v.length > 40) return "free text in query";
  }
  return null;
}

const MD_IMAGE = /!\[[^\]\n]{0,200}\]\(\s*(https?:\/\/[^\s)]{1,4096})/gi;
const MD_LINK = /(?<!!)\[([^\]\n]{1,200})\]\(\s*(https?:\/\/[^\s)]{1,4096})/gi;
const BARE_URL = /\bhttps?:\/\/[^\s<>"'()[\]]{1,4096}/gi;

function looksLikeHost(text: string): string | null {
  const t = text.trim().replace(/^[a-z][a-z0-9+.-]*:\/\//i, "");
  const m = /^([a-z0-9-]{1,63}(\.[a-z0-9-]{1,63})*\.[a-z]{2,24})(\/\S*)?$/i.exec(t);
  return m?.[1]?.toLowerCase() ?? null;
}

// ---------------------------------------------------------------------------------------------
// Senders.

function domainOf(address: string | null): string | null {
  const at = address?.lastIndexOf("@") ?? -1;
  return at === -1 || !address ? null : address.slice(at + 1).toLowerCase();
}

/** Edit distance ≤ limit, bounded (domains are short; both are cut to 64). */
function withinEdits(a: string, b: string, limit: number): boolean {
  if (Math.abs(a.length - b.length) > limit) return false;
  const x = a.slice(0, 64);
  const y = b.slice(0, 64);
  let prev = Array.from({ length: y.length + 1 }, (_, k) => k);
  for (let i = 1; i <= x.length; i++) {
    const cur = [i];
    let best = i;
    for (let j = 1; j <= y.length; j++) {
      const v = Math.min(
        (prev[j] ?? 0) + 1,
        (cur[j - 1] ?? 0) + 1,
        (prev[j - 1] ?? 0) + (x[i - 1] === y[j - 1] ? 0 : 1),
      );
      cur.push(v);
      if (v < best) best = v;
    }
    if (best > limit) return false;
    prev = cur;
  }
  return (prev[y.length] ?? limit + 1) <= limit;
}

// ---------------------------------------------------------------------------------------------

/** Screens one message. Pure; linear in its input. */
export function screenMessage(input: ScreenInput): Screening {
  const signals: ScreeningSignal[] = [];
  const add = (id: string, weight: number, evidence: string) => {
    if (signals.some((s) => s.id === id)) return;
    signals.push({ id, weight, evidence: printable(evidence).slice(0, EVIDENCE) });
  };
  const text = (input.text ?? "").slice(0, MAX_SCREENED_CHARS);
  const html = (input.html ?? "").slice(0, MAX_SCREENED_CHARS);
  const split = html ? splitHtml(html) : { visible: "", hidden: [], links: [], images: [] };
  let attachmentText = "";
  for (const a of input.attachments) {
    if (a.text && attachmentText.length < MAX_SCREENED_CHARS) {
      const t = /html/i.test(a.contentType) ? splitHtml(a.text).visible : a.text;
      attachmentText += `\n${t.slice(0, MAX_SCREENED_CHARS - attachmentText.length)}`;
    }
  }
  const subject = (input.subject ?? "").slice(0, 2000);
  const hiddenText = split.hidden.map((h) => h.text).join("\n");
  // Everything a model may be shown, visible or not.
  const everything = `${subject}\n${text}\n${split.visible}\n${hiddenText}\n${attachmentText}`;
  // The wording checks read text with invisible characters removed (they would split words).
  const readable = everything.replace(INVISIBLE_ALL, "").replace(JOINERS, "");

  // Hidden content. A newsletter's preheader is hidden on purpose and short; it only counts
  // together with what it says (instructions) or when it is long.
  const hiddenChars = split.hidden.reduce((n, h) => n + h.text.length, 0);
  const hiddenWhy = [...new Set(split.hidden.map((h) => h.why))].join(", ");
  const hiddenHits = instructionHits(hiddenText.replace(INVISIBLE_ALL, ""));
  if (hiddenHits.length > 0) {
    add("hidden.instructions", 45, `${hiddenWhy}: ${hiddenHits[0]?.match ?? ""}`);
  } else if (hiddenChars > 600) {
    add("hidden.long_hidden_text", 20, `${hiddenChars} characters hidden (${hiddenWhy})`);
  }
  const altStuffing = split.hidden.find((h) => h.why === "image alt text" && h.text.length > 300);
  if (altStuffing) add("hidden.alt_text_stuffing", 15, altStuffing.text);

  // Invisible characters.
  const zw = count(ZERO_WIDTH, everything) + strayJoiners(everything);
  if (zw >= 3) add("invisible.zero_width", zw >= 10 ? 35 : 25, `${zw} zero-width characters`);
  const bidi = count(BIDI, everything);
  if (bidi > 0 && /[\u202A-\u202E\u2066-\u2069]/.test(everything))
    add("invisible.bidi_override", 35, `${bidi} bidi controls`);
  const tags = count(TAGS, everything);
  if (tags > 0) add("invisible.tag_characters", 60, `${tags} tag characters spelling "${decodeTags(everything)}"`);
  const vs = count(VS_SUPPLEMENT, everything);
  VS_RUN.lastIndex = 0;
  if (vs >= 2 || VS_RUN.test(everything))
    add("invisible.variation_selectors", 45, `${vs} supplementary variation selectors`);
  const mixed = mixedScriptWords(`${subject}\n${input.fromName ?? ""}\n${text}\n${split.visible}`);
  if (mixed.length > 0) add("invisible.homoglyph_mix", 30, `mixed-script words: ${mixed.join(", ")}`);

  // Instructions aimed at an assistant, anywhere.
  const hits = instructionHits(readable);
  for (const h of hits) add(h.id, h.id === "instruction.addressed_to_ai" ? 25 : 40, h.match);

  // Exfiltration shapes.
  const links: { href: string; text: string | null }[] = [...split.links];
  for (const m of `${text}\n${attachmentText}`.matchAll(MD_IMAGE)) {
    const why = dataLookingQuery(m[1] ?? "");
    add("exfiltration.markdown_image", why ? 45 : 15, `${why ?? "remote markdown image"}: ${m[1]}`);
  }
  for (const m of `${text}\n${attachmentText}`.matchAll(MD_LINK)) links.push({ href: m[2] ?? "", text: m[1] ?? "" });
  for (const src of split.images.slice(0, 500)) {
    const why = dataLookingQuery(src);
    if (why === "placeholder in query" || why === "free text in query")
      add("exfiltration.image_url", 40, `${why}: ${src}`);
  }
  for (const m of `${text}\n${split.visible}`.matchAll(BARE_URL)) {
    links.push({ href: m[0], text: null });
    if (links.length > 2000) break;
  }
  let shortener: string | null = null;
  // Each distinct link once (the visible text repeats anchors as "text <url>"), and each host's
  // look-alike check once: newsletters carry hundreds of links to a handful of hosts.
  const seenLinks = new Set<string>();
  const brandOf = new Map<string, string | null>();
  for (const link of links.slice(0, 2000)) {
    const key = `${link.href}\u0000${link.text ?? ""}`;
    if (seenLinks.has(key)) continue;
    seenLinks.add(key);
    if (/^(javascript|data|vbscript):/i.test(link.href)) {
      add("exfiltration.script_link", 50, link.href);
      continue;
    }
    const host = hostOf(link.href);
    if (!host) continue;
    const why = dataLookingQuery(link.href);
    if (why === "placeholder in query") add("exfiltration.link_placeholder", 40, link.href);
    const info = urlUserinfo(link.href);
    if (info) add("lure.url_userinfo", 45, `shows ${info.shown}, goes to ${info.host}`);
    if (SHORTENER_HOSTS.has(host)) shortener = host;
    if (!brandOf.has(host)) brandOf.set(host, lookalikeBrand(host));
    const brand = brandOf.get(host);
    if (brand) add("sender.lookalike_link_host", 35, `${host} imitates ${brand}`);
    const shown = link.text ? looksLikeHost(link.text) : null;
    if (shown && registrable(shown) !== registrable(host)) {
      add("exfiltration.link_text_mismatch", 40, `shows ${shown}, links to ${host}`);
    }
  }

  // Encoded payloads in text bodies.
  const encodedIn = `${text}\n${split.visible}\n${hiddenText}`;
  const b64 = longRun(encodedIn, 160);
  if (b64) {
    const decoded = tryBase64(b64[0].slice(0, 8192));
    const decodedHits = decoded ? instructionHits(decoded) : [];
    if (decodedHits.length > 0) add("encoded.instructions", 45, `base64 decoding to: ${decodedHits[0]?.match}`);
    add("encoded.base64_run", 30, `${b64[0].length} characters of base64: ${b64[0].slice(0, 40)}…`);
  }
  const hex = /\b[0-9a-fA-F]{128,}\b/.exec(encodedIn);
  if (hex) add("encoded.hex_run", 30, `${hex[0].length} hex digits: ${hex[0].slice(0, 40)}…`);

  // Lures (shared with the outbound phishing scorer).
  const secret = affirmative(SECRET_REQUEST, readable);
  if (secret) add("lure.secret_request", 35, secret);
  const wallet = affirmative(WALLET_PHRASE, readable);
  // Security advice ("never share your seed phrase") names the phrase too: only a request with
  // somewhere to send it counts.
  if (wallet && secret) add("lure.wallet_phrase", 35, wallet);
  const disclosure = affirmative(SECRET_DISCLOSURE, readable);
  if (disclosure) add("lure.secret_disclosure", 20, disclosure);
  const money = affirmative(MONEY_REQUEST, readable);
  if (money) add("lure.money_request", 30, money);
  const payment = PAYMENT_REQUEST.exec(readable);
  if (payment) add("lure.payment_request", 30, payment[0]);
  const fee = FEE_LURE.exec(readable);
  if (fee && (payment || shortener || links.length > 0)) add("lure.fee_lure", 20, fee[0]);
  if (shortener && (secret || payment || fee)) add("lure.shortener_with_request", 25, shortener);
  for (const a of input.attachments) {
    if (scriptedAttachment(a)) add("lure.scripted_attachment", 50, a.filename ?? a.contentType);
  }

  // Sender trust: the receiver's verdicts (trusted source only), names, look-alike domains.
  const auth = input.authentication;
  if (auth?.dmarc === "fail") add("sender.dmarc_fail", 30, "dmarc=fail");
  else if (auth && auth.spf === "fail" && (auth.dkim === "fail" || auth.dkim === "none" || auth.dkim === null)) {
    add("sender.auth_fail", 20, `spf=${auth.spf} dkim=${auth.dkim}`);
  }
  const fromDomain = domainOf(input.fromAddress);
  const name = (input.fromName ?? "").toLowerCase();
  if (fromDomain && name) {
    const inName = /[a-z0-9._%+-]{1,64}@([a-z0-9.-]{1,253}\.[a-z]{2,})/i.exec(name)?.[1];
    if (inName && registrable(inName) !== registrable(fromDomain)) {
      add("sender.display_name_address", 35, `name shows ${inName}, sent from ${fromDomain}`);
    }
    const folded = skeleton(name.replace(/[^a-z0-9а-яё]/g, ""));
    for (const [brand, owned] of Object.entries(BRANDS)) {
      if (
        brand.length >= 4 &&
        folded.includes(brand) &&
        !owned.some((d) => fromDomain === d || fromDomain.endsWith(`.${d}`))
      ) {
        add("sender.brand_display_name", 30, `"${input.fromName}" from ${fromDomain}`);
        break;
      }
    }
  }
  if (fromDomain && input.knownSenders?.length) {
    const known = input.knownSenders.slice(0, 500);
    const knownDomains = new Set(known.map((k) => domainOf(k.address)).filter((d): d is string => Boolean(d)));
    if (!knownDomains.has(fromDomain)) {
      const fromReg = registrable(fromDomain);
      for (const d of knownDomains) {
        const reg = registrable(d);
        if (reg !== fromReg && (skeleton(fromReg) === skeleton(reg) || withinEdits(fromReg, reg, 1))) {
          add("sender.lookalike_known_domain", 45, `${fromDomain} looks like ${d}`);
          break;
        }
      }
      if (name) {
        const colleague = known.find((k) => k.name && k.name.toLowerCase() === name);
        if (colleague && domainOf(colleague.address) !== fromDomain) {
          add("sender.colleague_name", 30, `"${input.fromName}" usually writes from ${colleague.address}`);
        }
      }
    }
  }

  const score = signals.reduce((s, x) => s + x.weight, 0);
  return {
    verdict: score >= DANGEROUS_AT ? "dangerous" : score >= SUSPICIOUS_AT ? "suspicious" : "clean",
    score,
    signals,
    screened_at: new Date(input.now).toISOString(),
    version: SCREENING_VERSION,
  };
}

/** The first run of at least `min` base64 characters: one linear scan (a regex retries inside each run). */
function longRun(s: string, min: number): [string] | null {
  let start = -1;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 0;
    const b64 =
      (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 43 || c === 47 || c === 61;
    if (b64) {
      if (start === -1) start = i;
    } else if (start !== -1) {
      if (i - start >= min) return [s.slice(start, i)];
      start = -1;
    }
  }
  return null;
}

function tryBase64(s: string): string | null {
  try {
    const bin = atob(s.slice(0, s.length - (s.length % 4)));
    return /^[\t\n\r -~]{20,}$/.test(bin.slice(0, 4096)) ? bin : null;
  } catch {
    return null;
  }
}

/** Evidence shows invisible characters as `<U+XXXX>` so a reader sees what was there. */
function printable(s: string): string {
  return s
    .slice(0, EVIDENCE * 2)
    .replace(INVISIBLE_ALL, (c) => `<U+${(c.codePointAt(0) ?? 0).toString(16).toUpperCase()}>`);
}

// ---------------------------------------------------------------------------------------------
// The safe text view.

const FENCE_OPEN = (label: string) => `[[mailbot: suspicious text (${label}) begins]]`;
const FENCE_CLOSE = "[[mailbot: suspicious text ends]]";

/**
 * Plain text a model may read: what a human sees of the message (the HTML's visible text when
 * there is HTML, else the text part), hidden content removed (and said so), invisible characters
 * stripped, each instruction-shaped or encoded span fenced and labelled, links as "text <url>".
 */
export function safeText(input: { text: string | null; html: string | null }): string {
  const notes: string[] = [];
  let body: string;
  if (input.html) {
    const split = splitHtml(input.html);
    body = split.visible;
    const hiddenChars = split.hidden.reduce((n, h) => n + h.text.length, 0);
    if (hiddenChars > 0) {
      const why = [...new Set(split.hidden.map((h) => h.why))].join(", ");
      notes.push(`[[mailbot: ${hiddenChars} characters of hidden content removed (${why})]]`);
    }
  } else {
    body = (input.text ?? "").slice(0, MAX_SCREENED_CHARS).replace(MD_IMAGE, (_m, url: string) => `[image <${url}>]`);
  }
  const before = body.length;
  body = body.replace(INVISIBLE_ALL, "").replace(/(?<=[A-Za-z0-9 ])[\u200C\u200D](?=[A-Za-z0-9 ])/g, "");
  if (body.length !== before) notes.push(`[[mailbot: ${before - body.length} invisible characters removed]]`);
  return [...notes, fence(body)].join("\n").trim();
}

/** Fences instruction-shaped sentences and long encoded runs. Spans are found line by line (bounded). */
function fence(body: string): string {
  const out: string[] = [];
  for (const line of body.split("\n")) {
    const labels = instructionHits(line).map((h) => h.id);
    if (/[A-Za-z0-9+/]{160,}={0,2}|[0-9a-fA-F]{128,}/.test(line)) labels.push("encoded");
    if (labels.length > 0) {
      out.push(FENCE_OPEN([...new Set(labels)].join(", ")), line, FENCE_CLOSE);
    } else {
      out.push(line);
    }
  }
  return out.join("\n");
}
