/**
 * DNS lookups over DNS-over-HTTPS (Cloudflare's JSON API), behind one injectable resolver: the
 * webhook SSRF guard asks for A/AAAA, sender authentication asks for TXT/MX. Answers keep
 * "no such name", "no records of that type" and "could not tell right now" apart, because
 * callers treat them differently (a temporary failure must never read as "missing").
 */

export type DnsType = "A" | "AAAA" | "TXT" | "MX";

export type DnsAnswer =
  /** `records`: addresses for A/AAAA, joined character-strings for TXT, `"<pref> <host>"` for MX. */
  | { status: "ok"; records: string[]; ttl: number }
  | { status: "nxdomain" }
  | { status: "nodata" }
  /** SERVFAIL, a timeout, an unreachable resolver: retry later, decide nothing. */
  | { status: "temporary_failure"; error: string };

export interface ResolveOptions {
  /** Skip the cache and ask the authority now (the fresh answer then replaces the cached one). */
  fresh?: boolean;
}

export interface Resolver {
  resolve(name: string, type: DnsType, options?: ResolveOptions): Promise<DnsAnswer>;
}

const TYPE_CODES: Record<DnsType, number> = { A: 1, AAAA: 28, TXT: 16, MX: 15 };
/** Cache at most this long, whatever the TTL says (records change; we check again). */
const MAX_CACHE_SECONDS = 300;
/** Negative answers carry no TTL in the JSON API unless an SOA comes along; cache them briefly. */
const NEGATIVE_CACHE_SECONDS = 60;
const LOOKUP_TIMEOUT_MS = 5000;

interface DohJson {
  Status: number;
  Answer?: { name: string; type: number; TTL: number; data: string }[];
  Authority?: { type: number; TTL: number }[];
}

/** `"v=spf1 " "-all"` (several character-strings) → `v=spf1 -all`, unescaping `\"` and `\DDD`. */
export function joinTxt(data: string): string {
  const parts = [...data.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) =>
    (m[1] ?? "").replace(/\\(\d{3}|.)/g, (_, e: string) => (e.length === 3 ? String.fromCharCode(Number(e)) : e)),
  );
  return parts.length > 0 ? parts.join("") : data;
}

/** A resolver over the DoH JSON API, caching per isolate for min(TTL, 5 min) unless asked for `fresh`. */
export function dohResolver(options: { fetcher?: typeof fetch; endpoint?: string; now?: () => number } = {}): Resolver {
  const fetcher = options.fetcher ?? ((input, init) => fetch(input, init));
  const endpoint = options.endpoint ?? "https://cloudflare-dns.com/dns-query";
  const now = options.now ?? Date.now;
  const cache = new Map<string, { answer: DnsAnswer; expiresAt: number }>();

  return {
    async resolve(rawName, type, options) {
      const name = rawName.toLowerCase().replace(/\.$/, "");
      const key = `${type} ${name}`;
      const hit = options?.fresh ? undefined : cache.get(key);
      if (hit && hit.expiresAt > now()) return hit.answer;
      const answer = await lookup(fetcher, endpoint, name, type);
      const ttl =
        answer.status === "ok"
          ? Math.min(answer.ttl, MAX_CACHE_SECONDS)
          : answer.status === "temporary_failure"
            ? 0
            : NEGATIVE_CACHE_SECONDS;
      if (ttl > 0) {
        if (cache.size > 5000) cache.clear();
        cache.set(key, { answer, expiresAt: now() + ttl * 1000 });
      }
      return answer;
    },
  };
}

async function lookup(fetcher: typeof fetch, endpoint: string, name: string, type: DnsType): Promise<DnsAnswer> {
  let json: DohJson;
  try {
    const res = await fetcher(`${endpoint}?name=${encodeURIComponent(name)}&type=${type}`, {
      headers: { accept: "application/dns-json" },
      signal: AbortSignal.timeout(LOOKUP_TIMEOUT_MS),
    });
    if (!res.ok) return { status: "temporary_failure", error: `resolver answered HTTP ${res.status}` };
    json = await res.json<DohJson>();
  } catch (err) {
    return { status: "temporary_failure", error: `resolver unreachable: ${String(err).slice(0, 200)}` };
  }
  if (json.Status === 3) return { status: "nxdomain" };
  if (json.Status !== 0) return { status: "temporary_failure", error: `rcode ${json.Status}` };
  // A CNAME chain brings type-5 entries first: keep only the records asked for.
  const wanted = (json.Answer ?? []).filter((a) => a.type === TYPE_CODES[type]);
  if (wanted.length === 0) return { status: "nodata" };
  const records = wanted.map((a) => (type === "TXT" ? joinTxt(a.data) : a.data.trim().replace(/\.$/, "")));
  return { status: "ok", records, ttl: Math.max(0, Math.min(...wanted.map((a) => a.TTL))) };
}

/**
 * A resolver answering from a fixed table (tests, local tooling). Names not in the table are
 * NXDOMAIN; a name mapped to "temporary_failure" fails temporarily.
 */
export function staticResolver(
  table: Record<string, Partial<Record<DnsType, string[]>> | "temporary_failure">,
): Resolver {
  return {
    async resolve(rawName, type) {
      const entry = table[rawName.toLowerCase().replace(/\.$/, "")];
      if (entry === undefined) return { status: "nxdomain" };
      if (entry === "temporary_failure") return { status: "temporary_failure", error: "test: temporary failure" };
      const records = entry[type];
      return records && records.length > 0 ? { status: "ok", records, ttl: 60 } : { status: "nodata" };
    },
  };
}

let current: Resolver | null = null;

/** The isolate's resolver (DoH unless a test or tool swapped it). */
export function dnsResolver(): Resolver {
  current ??= dohResolver();
  return current;
}

/** Swaps the isolate's resolver (tests: a fake; null restores DoH). Returns the previous one. */
export function setDnsResolver(resolver: Resolver | null): Resolver | null {
  const previous = current;
  current = resolver;
  return previous;
}
