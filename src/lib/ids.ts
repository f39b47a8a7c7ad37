/**
 * Prefixed, time-sortable ids: `<prefix>_<10 chars of ms time><16 random chars>`, Crockford
 * base32 in lower case. Lexical order equals creation order (monotonic within an isolate), so
 * cursors are plain `WHERE id < ?`.
 */
const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";

export type IdPrefix =
  | "acct"
  | "key"
  | "inbox"
  | "msg"
  | "thr"
  | "att"
  | "whk"
  | "evt"
  | "dlv"
  /** A delivery report (DSN/ARF finding); `dlv_` is a webhook delivery. */
  | "rpt"
  /** A webhook dispatch: one event to one endpoint, the state behind its `dlv_` attempts (internal). */
  | "dsp"
  | "dom"
  | "aud"
  | "req"
  | "idem"
  | "sup"
  | "rev"
  /** Reputation counter signals waiting for the sweep to apply them (internal). */
  | "rpp"
  /** A send fingerprint (phishing scorer's recent-send state; internal). */
  | "sfp";

let lastTime = -1;
let lastRandom: number[] = [];

function encodeTime(ms: number): string {
  let out = "";
  let t = ms;
  for (let i = 0; i < 10; i++) {
    out = ALPHABET[t % 32] + out;
    t = Math.floor(t / 32);
  }
  return out;
}

/**
 * Random bytes are drawn 4 KiB at a time and handed out 16 by 16: one getRandomValues call per
 * 256 ids instead of one per id (each call into the runtime costs more than the id itself; every
 * request makes a few).
 */
const pool = new Uint8Array(4096);
let poolAt = pool.length;

function randomDigits(): number[] {
  if (poolAt + 16 > pool.length) {
    crypto.getRandomValues(pool);
    poolAt = 0;
  }
  const digits = new Array<number>(16);
  for (let i = 0; i < 16; i++) digits[i] = (pool[poolAt + i] as number) & 31;
  poolAt += 16;
  return digits;
}

/** Increments the random part so ids made in the same millisecond still sort in creation order. */
function increment(digits: number[]): number[] {
  const next = digits.slice();
  for (let i = next.length - 1; i >= 0; i--) {
    const d = next[i] ?? 0;
    if (d < 31) {
      next[i] = d + 1;
      return next;
    }
    next[i] = 0;
  }
  return randomDigits();
}

/** A new id for the given resource prefix. */
export function newId(prefix: IdPrefix, now = Date.now()): string {
  if (now === lastTime) {
    lastRandom = increment(lastRandom);
  } else {
    lastTime = now;
    lastRandom = randomDigits();
  }
  return `${prefix}_${encodeTime(now)}${lastRandom.map((d) => ALPHABET[d]).join("")}`;
}

/** Random lower-case base32 string, used for account short ids. */
export function randomBase32(length: number): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(length)), (b) => ALPHABET[b & 31]).join("");
}

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** Uniform random base62 string (rejection sampling, no modulo bias). */
export function randomBase62(length: number): string {
  let out = "";
  while (out.length < length) {
    for (const b of crypto.getRandomValues(new Uint8Array(length * 2))) {
      if (b < 248 && out.length < length) out += BASE62[b % 62];
    }
  }
  return out;
}

/** The smallest id of `prefix` made at `ms`: turns a time filter into a range on the id index. */
export function idFloor(prefix: IdPrefix, ms: number): string {
  return `${prefix}_${encodeTime(Math.max(0, Math.floor(ms)))}${"0".repeat(16)}`;
}
