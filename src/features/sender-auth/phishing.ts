/**
 * The phishing-style content scorer: a pure function of what a send would carry (subject, text,
 * HTML, links, attachments) plus one fact about the account's recent sends. Each signal that
 * fires adds its weight; at PHISHING_THRESHOLD the send is blocked and the signals are returned,
 * so every block explains itself. Its one import names its file with the extension, so the bench
 * can run it directly in Node (tsconfig allows .ts imports; the bundler and vitest read them too).
 *
 * Weights are set so that one unmistakable trick (a link whose text shows another domain, a
 * form, a `javascript:` link, an executable attachment, a brand look-alike host) blocks alone,
 * while softer signs (a shortener, urgent wording, a punycode host) block only together.
 */

import { decodeEntities } from "../../mail/html-text.ts";
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
} from "../screening/lures.ts";

export const PHISHING_THRESHOLD = 50;

/**
 * The scorer reads at most this many characters of the text body and of the HTML body. It runs
 * before the size checks, on bodies of up to several MiB: whatever lies past the cap is NOT
 * scored (a phishing trick placed after 256 KiB of filler goes unseen by this step). Together
 * with the bounded spans in the expressions below, this keeps the time per message linear and
 * small whatever the input.
 */
export const MAX_SCORED_CHARS = 256 * 1024;
/** Longest tag or anchor text the expressions look across. */
const SPAN = 2048;
/** Longest `<script>` / `<style>` element stripped before reading the text (newsletters carry long CSS). */
const BLOCK_SPAN = 64 * 1024;

export interface ScoreInput {
  subject: string;
  text: string | null;
  html: string | null;
  /** `text`: the start of a markup attachment (HTML, SVG), to find script in it. */
  attachments: { filename: string; contentType: string; text?: string | null }[];
  /** Distinct never-before-seen recipients of this same body across the account's recent sends. */
  sprayRecipients?: number;
}

export interface Signal {
  name: string;
  weight: number;
  /** What matched, e.g. the offending URL or file name (short). */
  evidence: string;
}

export interface ScoreResult {
  score: number;
  threshold: number;
  blocked: boolean;
  signals: Signal[];
}

/** Distinct new recipients of one body within the window that make a spray. */
export const SPRAY_RECIPIENTS = 25;

export const BRANDS: Record<string, string[]> = {
  paypal: ["paypal.com"],
  microsoft: ["microsoft.com", "live.com", "office.com", "microsoftonline.com"],
  office365: ["office.com", "microsoft.com"],
  outlook: ["outlook.com", "live.com", "office.com"],
  apple: ["apple.com", "icloud.com"],
  icloud: ["icloud.com", "apple.com"],
  google: ["google.com", "gmail.com"],
  gmail: ["gmail.com", "google.com"],
  amazon: ["amazon.com", "amazon.co.uk", "amazon.de"],
  netflix: ["netflix.com"],
  facebook: ["facebook.com", "fb.com"],
  instagram: ["instagram.com"],
  linkedin: ["linkedin.com"],
  dropbox: ["dropbox.com"],
  docusign: ["docusign.com", "docusign.net"],
  chase: ["chase.com"],
  wellsfargo: ["wellsfargo.com"],
  bankofamerica: ["bankofamerica.com"],
  citibank: ["citibank.com", "citi.com"],
  coinbase: ["coinbase.com"],
  binance: ["binance.com"],
  dhl: ["dhl.com"],
  fedex: ["fedex.com"],
  usps: ["usps.com"],
  irs: ["irs.gov"],
  adobe: ["adobe.com"],
  stripe: ["stripe.com"],
};

const DANGEROUS_EXTENSIONS = new Set([
  "exe",
  "scr",
  "com",
  "pif",
  "bat",
  "cmd",
  "js",
  "jse",
  "vbs",
  "vbe",
  "wsf",
  "wsh",
  "hta",
  "jar",
  "msi",
  "msp",
  "ps1",
  "lnk",
  "iso",
  "img",
  "vhd",
  "cpl",
  "reg",
  "scf",
  "dll",
  "apk",
  "appx",
  "docm",
  "xlsm",
  "pptm",
]);
const DOCUMENT_EXTENSIONS = new Set(["pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "txt", "jpg", "png", "zip"]);
const DANGEROUS_TYPES = new Set([
  "application/x-msdownload",
  "application/x-msdos-program",
  "application/x-dosexec",
  "application/x-sh",
  "application/hta",
  "application/x-ms-shortcut",
  "application/java-archive",
]);

/** Asking for credentials or payment details. */
const CREDENTIAL =
  /\b(verify|confirm|validate|update|re-?enter|restore|unlock|reactivate)\b[^.!?\n]{0,40}\b(your\s+)?(account|password|credentials|identity|login|log-in|sign[- ]?in|billing|payment\s+(details|information|method)|card\s+details|bank\s+details|ssn|social\s+security|mailbox)\b|\b(enter|provide|submit)\s+your\s+(password|credentials|login|pin|card\s+number|ssn)\b/i;
/** Threats and deadlines. */
const URGENCY =
  /\b(suspend(ed)?|suspension|locked|disabled|terminated|deactivated|unusual\s+(sign[- ]?in|activity|login)|unauthori[sz]ed|within\s+(24|48|12)\s+hours|immediately|urgent(ly)?|final\s+(notice|warning)|action\s+required|avoid\s+(losing|closure|suspension)|permanently\s+(deleted|closed)|expire[sd]?\s+today)\b/i;
/** Payment redirection and gift-card scams. */
const MONEY_TRICK =
  /\b(gift\s*cards?|wire\s+transfer|new\s+bank\s+(account|details)|changed\s+our\s+bank|bitcoin\s+wallet|send\s+(the\s+)?codes?)\b/i;

// Linear time whatever the input: every open-ended span is bounded (SPAN) and stops at the next
// `<` (or, inside an anchor / a script, at the next opening of the same element). An unbounded
// lazy `[\s\S]*?` or `[^>]*` retried from each of many unclosed `<a`/`<` made a 200 KB body
// cost a third of a second, 4× more per doubling (quadratic backtracking).
const SCRIPT_OR_STYLE = new RegExp(`<(script|style)\\b(?:(?!<\\/?\\1\\b)[\\s\\S]){0,${BLOCK_SPAN}}<\\/\\1\\s*>`, "gi");
const TAG = new RegExp(`<[^<>]{1,${SPAN}}>`, "g");
const ANCHOR = new RegExp(
  `<a\\b[^<>]{0,${SPAN}}?\\bhref\\s*=\\s*("([^"<>]{0,${SPAN}})"|'([^'<>]{0,${SPAN}})'|([^\\s<>]{1,${SPAN}}))[^<>]{0,${SPAN}}>((?:(?!<\\/?a\\b)[\\s\\S]){0,${SPAN}})<\\/a\\s*>`,
  "gi",
);
const INPUT_PASSWORD = new RegExp(`<input\\b[^<>]{0,${SPAN}}?type\\s*=\\s*["']?password`, "i");

interface Link {
  href: string;
  text: string | null;
}

/** Scores a message; pure and synchronous (a few regular expressions over its text). */
export function scorePhishing(input: ScoreInput): ScoreResult {
  const signals: Signal[] = [];
  const add = (name: string, weight: number, evidence: string) => {
    if (!signals.some((s) => s.name === name)) signals.push({ name, weight, evidence: evidence.slice(0, 200) });
  };
  const html = (input.html ?? "").slice(0, MAX_SCORED_CHARS);
  const text = (input.text ?? "").slice(0, MAX_SCORED_CHARS);
  const plain = `${input.subject.slice(0, SPAN)}\n${text}\n${html ? stripTags(html) : ""}`;
  const links = extractLinks(text, html);

  for (const link of links) {
    const lower = link.href.trim().toLowerCase();
    if (lower.startsWith("javascript:") || lower.startsWith("data:") || lower.startsWith("vbscript:")) {
      add("script_or_data_link", 60, link.href.slice(0, 80));
      continue;
    }
    const host = hostOf(link.href);
    if (!host) continue;
    if (isIpLiteral(host)) add("ip_literal_link", 45, host);
    if (SHORTENER_HOSTS.has(host)) add("url_shortener", 25, host);
    const info = urlUserinfo(link.href);
    // https://brand.example@other.example/: the reader sees the part before @, the browser goes after it.
    if (info) add("url_userinfo", 60, `shows ${info.shown}, goes to ${info.host}`);
    if (host.split(".").some((l) => l.startsWith("xn--"))) add("punycode_host", 35, host);
    const brand = lookalikeBrand(host);
    if (brand) add("brand_lookalike_host", 60, `${host} imitates ${brand}`);
    if (link.text) {
      const shown = hostOf(
        /^[a-z][a-z0-9+.-]*:\/\//i.test(link.text.trim()) ? link.text.trim() : `http://${link.text.trim()}`,
      );
      if (shown && /\.[a-z]{2,}$/i.test(shown) && /^[\w.-]+\.[a-z]{2,}(\/\S*)?$/i.test(stripScheme(link.text.trim()))) {
        if (registrable(shown) !== registrable(host)) add("deceptive_anchor", 60, `shows ${shown}, links to ${host}`);
      }
    }
  }

  if (/<form[\s>]/i.test(html)) add("html_form", 50, "<form>");
  if (INPUT_PASSWORD.test(html)) add("password_field", 40, '<input type="password">');

  const credential = CREDENTIAL.exec(plain);
  const urgency = URGENCY.exec(plain);
  if (credential && links.length > 0) {
    add("credential_request_with_link", urgency ? 55 : 35, credential[0]);
  }
  if (urgency && links.length > 0) add("urgent_threat_with_link", 15, urgency[0]);
  const money = MONEY_TRICK.exec(plain);
  if (money && (urgency || credential)) add("payment_redirection", 40, money[0]);

  for (const a of input.attachments) {
    const name = a.filename.toLowerCase().trim();
    const parts = name.split(".");
    const ext = parts.length > 1 ? (parts[parts.length - 1] as string) : "";
    const inner = parts.length > 2 ? (parts[parts.length - 2] as string) : "";
    if (DANGEROUS_EXTENSIONS.has(ext) && DOCUMENT_EXTENSIONS.has(inner)) {
      add("double_extension_attachment", 70, a.filename);
    } else if (DANGEROUS_EXTENSIONS.has(ext) || DANGEROUS_TYPES.has(a.contentType.toLowerCase())) {
      add("dangerous_attachment", 60, a.filename);
    }
    if (/\s{5,}\S/.test(a.filename)) add("padded_attachment_name", 40, a.filename);
  }

  // Signal families shared with the inbound screener (screening/lures.ts): secrets of every kind,
  // card and bank details, small fees, shorteners next to a request, scripted markup attachments.
  const secret = affirmative(SECRET_REQUEST, plain);
  const wallet = affirmative(WALLET_PHRASE, plain);
  const disclosure = affirmative(SECRET_DISCLOSURE, plain);
  // A wallet's recovery phrase is never asked for by anyone legitimate; nor is a secret sent back.
  if (wallet && secret) add("wallet_phrase_request", 60, wallet);
  else if (disclosure) add("secret_disclosure_request", 50, disclosure);
  else if (secret && !credential) add("secret_request", links.length > 0 ? 30 : 20, secret);
  const payment = affirmative(PAYMENT_REQUEST, plain);
  if (payment && !credential) add("payment_details_request", 25, payment);
  const fee = FEE_LURE.exec(plain);
  if (fee && (payment || links.length > 0)) add("fee_lure", 20, fee[0]);
  const moneyRequest = affirmative(MONEY_REQUEST, plain);
  if (moneyRequest && !signals.some((x) => x.name === "payment_redirection")) add("money_request", 50, moneyRequest);
  if (signals.some((x) => x.name === "url_shortener") && (secret || wallet || payment || fee || moneyRequest)) {
    add("shortener_with_request", 20, "a shortened link next to a request for money or credentials");
  }
  for (const a of input.attachments) {
    if (scriptedAttachment(a)) add("scripted_markup_attachment", 60, a.filename);
  }

  if ((input.sprayRecipients ?? 0) >= SPRAY_RECIPIENTS) {
    add("same_body_sprayed", 40, `${input.sprayRecipients} new recipients of the same body within 24 h`);
  }

  const score = signals.reduce((s, x) => s + x.weight, 0);
  return { score, threshold: PHISHING_THRESHOLD, blocked: score >= PHISHING_THRESHOLD, signals };
}

/**
 * The text of an HTML body as the scorer reads it. Deliberately not mail/html-text's htmlToPlain
 * (the search index's): that one drops everything from a stray `<` to the next `>`, and a lure
 * hidden behind `3 < 5` would then score nothing. Bounded patterns keep it linear; entities are
 * decoded by the shared decoder.
 */
function stripTags(html: string): string {
  return decodeEntities(html.replace(SCRIPT_OR_STYLE, " ").replace(TAG, " ").replace(/\s+/g, " "));
}

function stripScheme(s: string): string {
  return s.replace(/^[a-z][a-z0-9+.-]*:\/\//i, "");
}

/** Anchors (href + visible text), `src`/`action` targets, and bare URLs in the text body. */
function extractLinks(text: string, html: string): Link[] {
  const links: Link[] = [];
  for (const m of html.matchAll(ANCHOR)) {
    const href = decodeEntities(m[2] ?? m[3] ?? m[4] ?? "");
    links.push({ href, text: stripTags(m[5] ?? "").trim() || null });
  }
  for (const m of html.matchAll(/\b(?:src|action|formaction)\s*=\s*("([^"]*)"|'([^']*)')/gi)) {
    const href = decodeEntities(m[2] ?? m[3] ?? "");
    if (/^(javascript|data|vbscript):/i.test(href.trim()) || /^https?:/i.test(href.trim())) {
      // Images are everywhere in ordinary mail; only script/data sources and form targets count.
      if (!/^https?:/i.test(href.trim()) || /action/i.test(m[0])) links.push({ href, text: null });
    }
  }
  for (const m of `${text}\n${stripTags(html)}`.matchAll(/\b(?:https?:\/\/|www\.)[^\s<>"')\]]+/gi)) {
    links.push({ href: m[0].startsWith("www.") ? `http://${m[0]}` : m[0], text: null });
  }
  return links;
}

export function hostOf(url: string): string | null {
  const m = /^[a-z][a-z0-9+.-]*:\/\/(?:[^@/?#]*@)?(\[[^\]]+\]|[^/:?#]+)/i.exec(url.trim());
  if (!m?.[1]) return null;
  return m[1].toLowerCase().replace(/\.$/, "");
}

function isIpLiteral(host: string): boolean {
  return (
    /^\d{1,3}(\.\d{1,3}){3}$/.test(host) ||
    host.startsWith("[") ||
    /^0x[0-9a-f]+$/i.test(host) ||
    /^\d{8,10}$/.test(host)
  );
}

/** Last two labels (three for the common two-level public suffixes). Good enough to compare hosts. */
export function registrable(host: string): string {
  const labels = host.split(".");
  const twoLevel = /^(co|com|org|net|gov|ac|edu)\.[a-z]{2}$/.test(labels.slice(-2).join("."));
  return labels.slice(twoLevel ? -3 : -2).join(".");
}

/** Words phishing domains glue to a brand's name. */
const LURES = new Set([
  "secure",
  "security",
  "login",
  "signin",
  "verify",
  "verification",
  "account",
  "accounts",
  "support",
  "update",
  "service",
  "services",
  "help",
  "billing",
  "auth",
  "id",
  "online",
  "alert",
  "alerts",
]);

/** Confusable characters folded to the letters they imitate. */
export function skeleton(label: string): string {
  return label
    .replace(/rn/g, "m")
    .replace(/vv/g, "w")
    .replace(/[0]/g, "o")
    .replace(/[1!|]/g, "l")
    .replace(/[3]/g, "e")
    .replace(/[4@]/g, "a")
    .replace(/[5$]/g, "s")
    .replace(/[а]/g, "a")
    .replace(/[е]/g, "e")
    .replace(/[о]/g, "o")
    .replace(/[р]/g, "p")
    .replace(/[с]/g, "c")
    .replace(/[х]/g, "x")
    .replace(/[і]/g, "i")
    .replace(/-/g, "");
}

/** The brand a host imitates (homoglyph name, or the brand's name on someone else's domain); null if none. */
export function lookalikeBrand(host: string): string | null {
  const reg = registrable(host);
  for (const owned of Object.values(BRANDS)) {
    if (owned.some((d) => host === d || host.endsWith(`.${d}`))) return null;
  }
  const regLabel = reg.split(".")[0] ?? "";
  const folded = skeleton(regLabel);
  const parts = regLabel.split("-").map(skeleton);
  const sub = host.slice(0, host.length - reg.length);
  for (const brand of Object.keys(BRANDS)) {
    // paypa1.com, rnicrosoft.com: the brand's name spelt with look-alike characters.
    if (folded === brand && regLabel !== brand) return brand;
    // paypal.net, apple.co: the brand's name on a domain the brand does not own.
    if (regLabel === brand) return brand;
    // paypal-secure.com, secure-paypa1.net, applesupport.help: the name plus a lure word.
    if (parts.length > 1 && parts.includes(brand)) return brand;
    if (folded.startsWith(brand) && LURES.has(folded.slice(brand.length))) return brand;
    if (folded.endsWith(brand) && LURES.has(folded.slice(0, folded.length - brand.length))) return brand;
    // paypal.com.account-check.top: the brand's name as a label in front of an unrelated domain.
    if (brand.length >= 4 && new RegExp(`(^|[.-])${brand}([.-]|$)`).test(sub)) return brand;
  }
  return null;
}
