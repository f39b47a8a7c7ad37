/**
 * Signal families shared by the inbound screener and the outbound phishing scorer: requests for
 * credentials, secrets and money, URL tricks (userinfo, shorteners next to a request) and HTML /
 * SVG attachments that run script. Pure and bounded (every pattern's spans are capped), so both
 * callers stay linear in their input. Imports name their files with the extension so the benches
 * can load this file directly in Node.
 */

/** Secrets of every kind: passwords, one-time codes, recovery / seed phrases, keys and tokens. */
const SECRET_NOUNS =
  "password|passcode|pass\\s*phrase|pin(\\s+code)?|one[- ]time\\s+(code|password)|2fa\\s+code|verification\\s+code|security\\s+code|recovery\\s+(phrase|words|code|key)|seed\\s+(phrase|words)|secret\\s+(phrase|recovery|key)|mnemonic|private\\s+key|api\\s+key|access\\s+token|wallet\\s+(phrase|words|key)";
/** A request for a secret of any kind (enter it somewhere, or hand it over). */
export const SECRET_REQUEST = new RegExp(
  `\\b(enter|confirm|verify|provide|submit|send|share|type|reply\\s+with|re-?enter|paste|update|validate|restore|import)\\b[^.!?\\n]{0,50}\\b(${SECRET_NOUNS})s?\\b`,
  "i",
);
/** Handing a secret over (reply with it, send it, paste it): no legitimate sender asks for that. */
export const SECRET_DISCLOSURE = new RegExp(
  `\\b(reply\\s+with|send|share|paste|tell\\s+us|email\\s+us|text\\s+us|give\\s+us)\\b[^.!?\\n]{0,50}\\b(${SECRET_NOUNS})s?\\b`,
  "i",
);
/** The 12/24-word phrase of a crypto wallet, asked for in any wording. */
export const WALLET_PHRASE =
  /\b(12|24|twelve|twenty[- ]four)[- ]word\b|\b(recovery|seed|secret|mnemonic)\s+(phrase|words)\b/i;
/** Card or bank details asked for (not a receipt's "card ending 1234"). */
export const PAYMENT_REQUEST =
  /\b(enter|confirm|provide|submit|update|verify|pay|settle)\b[^.!?\n]{0,40}\b(your|the)\s+([a-z]+\s+)?(card\s+(number|details|information)|cvv|cvc|expiry\s+date|bank\s+(details|account)|billing\s+(details|information)|payment\s+(details|information|method))\b/i;
/** Gift cards, wires and changed bank details: the money half of a CEO or supplier impersonation. */
export const MONEY_REQUEST =
  /\b(buy|purchase|get|send)\b[^.!?\n]{0,40}\bgift\s*cards?\b|\bgift\s*cards?\b[^.!?\n]{0,60}\b(send|scratch|codes?)\b|\b(wire|transfer)\s+(the\s+)?(funds|money|payment)\s+(to|today|now)\b|\b(changed|new|updated)\s+(our\s+)?bank\s+(account|details)\b/i;
/** A small fee to release something (customs, delivery, redelivery, unpaid toll). */
export const FEE_LURE =
  /\b(customs|import|delivery|redelivery|shipping|handling|clearance|toll|release)\s+(fee|charge|duty|duties|payment)\b|\bunpaid\s+(toll|fee|duty|duties|shipping)\b|\b(parcel|package|shipment)\b[^.!?\n]{0,60}\b(on\s+hold|held|pending|awaiting\s+payment)\b/i;

export const SHORTENER_HOSTS = new Set([
  "bit.ly",
  "tinyurl.com",
  "t.co",
  "goo.gl",
  "ow.ly",
  "is.gd",
  "buff.ly",
  "rebrand.ly",
  "cutt.ly",
  "shorturl.at",
  "tiny.cc",
  "rb.gy",
  "t.ly",
  "s.id",
  "v.gd",
  "shorte.st",
  "bl.ink",
  "lnkd.in",
  "tiny.one",
  "qrco.de",
]);

/** `https://brand.example@other.example/`: the text before `@` is what a reader sees, the host after it is where it goes. */
export function urlUserinfo(url: string): { shown: string; host: string } | null {
  const m = /^[a-z][a-z0-9+.-]{0,20}:\/\/([^@/?#\s]{1,256})@([^/:?#\s]{1,256})/i.exec(url.trim());
  if (!m?.[1] || !m[2]) return null;
  // user:password@host of an ftp/basic-auth link is rare in mail; a dotted name before @ is the trick.
  if (!/[a-z0-9-]\.[a-z]{2,}/i.test(m[1])) return null;
  return { shown: m[1].toLowerCase(), host: m[2].toLowerCase() };
}

/** An HTML or SVG attachment that runs script or submits a form (the classic credential-harvest file). */
export function scriptedAttachment(a: { filename: string | null; contentType: string; text?: string | null }): boolean {
  const name = (a.filename ?? "").toLowerCase();
  const type = a.contentType.toLowerCase();
  const markup = /\.(html?|shtml|xhtml|svg|svgz|mht|mhtml)$/.test(name) || /html|svg/.test(type);
  if (!markup) return false;
  const body = (a.text ?? "").slice(0, 256 * 1024);
  return /<script\b|\bon(load|error|click|mouseover)\s*=|javascript:|<form\b|window\.location|document\.write|atob\s*\(/i.test(
    body,
  );
}

/** The first match not negated just before it ("never share your …", "we will not ask for …"). */
export function affirmative(re: RegExp, text: string): string | null {
  const g = globalOf(re);
  g.lastIndex = 0;
  let n = 0;
  for (let m = g.exec(text); m !== null && n < 20; m = g.exec(text), n++) {
    const before = text.slice(Math.max(0, m.index - 40), m.index);
    if (!/\b(never|not|don'?t|won'?t|no\s+one|nobody|nor)\b[^.!?\n]{0,30}$/i.test(before)) return m[0];
  }
  return null;
}

/** A global copy of a lure pattern, made once (affirmative runs several on every mail). */
function globalOf(re: RegExp): RegExp {
  let g = globalCopies.get(re);
  if (!g) {
    g = new RegExp(re.source, re.flags.includes("g") ? re.flags : `${re.flags}g`);
    globalCopies.set(re, g);
  }
  return g;
}
const globalCopies = new WeakMap<RegExp, RegExp>();
