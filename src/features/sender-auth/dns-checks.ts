import type { DnsAnswer, Resolver } from "../../lib/dns";
import { DKIM_SELECTOR, normalizeKeyText } from "./dkim";

/**
 * The sender-authentication checks, as pure functions of DNS answers: SPF, DKIM, DMARC (the send
 * gate) and MX (inbound, reported but never gating a send). A temporary DNS failure is its own
 * outcome, never "missing": the caller defers instead of deciding.
 */

export type CheckStatus = "pass" | "fail" | "missing";

export interface CheckResult {
  status: CheckStatus;
  /** The records found (TXT joined per RFC 7208 §3.3, MX as `"<pref> <host>"`), or null for none. */
  found: string[] | null;
  /** What would pass, in words a person can act on. */
  expected: string;
  /** Why it failed, when it did. */
  problem: string | null;
  /** The lookup could not be made right now (SERVFAIL, timeout): the result decides nothing. */
  temporary?: boolean;
}

/** What this deployment expects a sending domain to publish. */
export interface Expectation {
  /** Domain to `include:` in SPF (the service's sending infrastructure), e.g. `_spf.mx.cloudflare.net`. */
  spfInclude: string;
  /** base64 SPKI of the key we sign with for this domain; null when none is configured. */
  dkimPublicKey: string | null;
  /** Hosts an MX may point at for inbound mail to reach us. */
  mxHosts: string[];
}

/** At most this many DNS-querying terms while following SPF include/redirect (RFC 7208 §4.6.4). */
const SPF_LOOKUP_LIMIT = 10;

function temporary(answer: DnsAnswer & { status: "temporary_failure" }, expected: string): CheckResult {
  return { status: "fail", found: null, expected, problem: `DNS lookup failed: ${answer.error}`, temporary: true };
}

/** SPF: exactly one `v=spf1` record at the domain whose evaluation reaches `include:<spfInclude>` (RFC 7208). */
export async function checkSpf(resolver: Resolver, domain: string, exp: Expectation): Promise<CheckResult> {
  const expected = `one TXT record at ${domain}: v=spf1 include:${exp.spfInclude} ~all (or -all)`;
  const answer = await resolver.resolve(domain, "TXT");
  if (answer.status === "temporary_failure") return temporary(answer, expected);
  if (answer.status !== "ok") return { status: "missing", found: null, expected, problem: "no SPF record" };
  const spf = answer.records.filter(isSpfRecord);
  if (spf.length === 0) return { status: "missing", found: null, expected, problem: "no SPF record" };
  if (spf.length > 1) {
    return { status: "fail", found: spf, expected, problem: "more than one SPF record (RFC 7208 permerror)" };
  }
  const record = spf[0] as string;
  if (/(^|\s)\+?all(\s|$)/i.test(record)) {
    return { status: "fail", found: spf, expected, problem: "`+all` authorises every server on the internet" };
  }
  const state: SpfState = {
    resolver,
    target: exp.spfInclude.toLowerCase().replace(/\.$/, ""),
    lookups: 0,
    voids: 0,
  };
  const outcome = await evaluateSpf(state, domain.toLowerCase(), record, [domain.toLowerCase()]);
  if (outcome.kind === "temporary") {
    return { ...temporary({ status: "temporary_failure", error: outcome.problem }, expected), found: spf };
  }
  if (outcome.kind === "pass") return { status: "pass", found: spf, expected, problem: null };
  return { status: "fail", found: spf, expected, problem: outcome.problem };
}

function isSpfRecord(text: string): boolean {
  return /^v=spf1(\s|$)/i.test(text);
}

interface SpfState {
  resolver: Resolver;
  /** The include that authorises this service's servers (lower-case, no trailing dot). */
  target: string;
  /** DNS-querying terms evaluated so far (include, a, mx, ptr, exists, redirect): at most 10. */
  lookups: number;
  /** Of those, lookups that found nothing (NXDOMAIN / no records): at most 2. */
  voids: number;
}

/**
 * How a record treats mail from this service's servers. `pass`: evaluation reaches a `+include:`
 * of our SPF (directly or through includes/redirect) before anything else matches; `nomatch`:
 * it ends at `all` or runs out of terms first, or our include carries a non-pass qualifier;
 * `permerror` / `temporary`: what a receiver would get for our mail.
 */
type SpfOutcome =
  | { kind: "pass" }
  | { kind: "nomatch"; problem: string }
  | { kind: "permerror"; problem: string }
  | { kind: "temporary"; problem: string };

const SPF_MECHANISM = /^([+\-~?]?)(all|include|a|mx|ptr|ip4|ip6|exists)(?:([:/])(.*))?$/;
const SPF_MODIFIER = /^([a-z][a-z0-9_.-]*)=(.*)$/;
const SPF_VOID_LIMIT = 2;
const QUALIFIER_RESULT: Record<string, string> = { "-": "fail", "~": "softfail", "?": "neutral" };

/**
 * RFC 7208 §4.6 for the servers of this service, whose addresses we do not know here: terms are
 * walked left to right and the walk stops at `all`; ip4/ip6/a/mx/ptr/exists are taken not to
 * match (they cost their lookups, and a/mx their void lookups), includes are followed.
 */
async function evaluateSpf(state: SpfState, domain: string, record: string, chain: string[]): Promise<SpfOutcome> {
  const terms = record.trim().split(/\s+/).slice(1);
  const mechanisms: { qualifier: string; name: string; arg: string | null }[] = [];
  let redirect: string | null = null;
  let hasAll = false;
  // The whole record is checked first: a syntax error anywhere is a permerror (§4.6).
  for (const raw of terms) {
    const term = raw.toLowerCase();
    const mech = SPF_MECHANISM.exec(term);
    if (mech) {
      const name = mech[2] as string;
      const arg = mech[3] === ":" ? (mech[4] ?? "") : null;
      if ((name === "include" || name === "exists") && !arg) {
        return { kind: "permerror", problem: `\`${raw}\` at ${domain} names no domain` };
      }
      if ((name === "ip4" || name === "ip6") && !arg)
        return { kind: "permerror", problem: `\`${raw}\` has no address` };
      if (name === "all") hasAll = true;
      mechanisms.push({ qualifier: mech[1] || "+", name, arg: arg?.replace(/\/\d+(\/\/\d+)?$/, "") ?? null });
      continue;
    }
    const mod = SPF_MODIFIER.exec(term);
    if (mod) {
      if (mod[1] === "redirect") {
        if (redirect !== null) return { kind: "permerror", problem: `more than one redirect= at ${domain}` };
        redirect = (mod[2] ?? "").replace(/\.$/, "");
      }
      continue;
    }
    return { kind: "permerror", problem: `\`${raw}\` at ${domain} is not an SPF term (RFC 7208 permerror)` };
  }

  for (const m of mechanisms) {
    if (m.name === "all") {
      return {
        kind: "nomatch",
        problem: `\`${m.qualifier === "+" ? "" : m.qualifier}all\` at ${domain} ends the evaluation before include:${state.target}`,
      };
    }
    if (m.name === "ip4" || m.name === "ip6") continue;
    const limit = countLookup(state);
    if (limit) return limit;
    if (m.name === "include") {
      const name = (m.arg as string).replace(/\.$/, "");
      if (name === state.target) {
        if (m.qualifier === "+") return { kind: "pass" };
        return {
          kind: "nomatch",
          problem: `\`${m.qualifier}include:${name}\` at ${domain} gives this service's mail ${QUALIFIER_RESULT[m.qualifier]}, not pass`,
        };
      }
      const inner = await followRecord(state, name, "include", chain);
      if (inner.kind === "pass") {
        if (m.qualifier === "+") return inner;
        return {
          kind: "nomatch",
          problem: `\`${m.qualifier}include:${name}\` at ${domain} gives this service's mail ${QUALIFIER_RESULT[m.qualifier]}, not pass`,
        };
      }
      if (inner.kind !== "nomatch") return inner;
      continue;
    }
    // a, mx, exists, ptr: a lookup each; a/mx with a plain domain are looked up to count void answers.
    if (m.name === "a" || m.name === "mx") {
      const name = (m.arg ?? domain).replace(/\.$/, "");
      if (name.includes("%")) continue;
      const answer = await state.resolver.resolve(name, m.name === "a" ? "A" : "MX");
      if (answer.status === "temporary_failure") {
        return { kind: "temporary", problem: `\`${m.name}:${name}\`: ${answer.error}` };
      }
      if (answer.status !== "ok") {
        const over = countVoid(state);
        if (over) return over;
      }
    }
  }

  if (redirect !== null && !hasAll) {
    const limit = countLookup(state);
    if (limit) return limit;
    if (redirect === state.target) return { kind: "pass" };
    return followRecord(state, redirect, "redirect", chain);
  }
  return { kind: "nomatch", problem: `include:${state.target} not found` };
}

/** Evaluates the SPF record at an include/redirect target; no record there is a permerror (§5.2, §6.1). */
async function followRecord(
  state: SpfState,
  name: string,
  via: "include" | "redirect",
  chain: string[],
): Promise<SpfOutcome> {
  if (name.includes("%")) return { kind: "nomatch", problem: `include:${state.target} not found` };
  if (chain.includes(name)) {
    return { kind: "permerror", problem: `SPF loop: ${[...chain, name].join(" → ")} (RFC 7208 permerror)` };
  }
  const answer = await state.resolver.resolve(name, "TXT");
  if (answer.status === "temporary_failure") {
    return { kind: "temporary", problem: `${via} ${name}: ${answer.error}` };
  }
  if (answer.status !== "ok") {
    const over = countVoid(state);
    if (over) return over;
  }
  const records = answer.status === "ok" ? answer.records.filter(isSpfRecord) : [];
  if (records.length !== 1) {
    return {
      kind: "permerror",
      problem: `${via === "include" ? "include:" : "redirect="}${name} has ${records.length === 0 ? "no SPF record" : "more than one SPF record"} (RFC 7208 permerror at receivers)`,
    };
  }
  return evaluateSpf(state, name, records[0] as string, [...chain, name]);
}

function countLookup(state: SpfState): SpfOutcome | null {
  state.lookups += 1;
  return state.lookups > SPF_LOOKUP_LIMIT
    ? { kind: "permerror", problem: `more than ${SPF_LOOKUP_LIMIT} DNS-querying terms (RFC 7208 §4.6.4 permerror)` }
    : null;
}

function countVoid(state: SpfState): SpfOutcome | null {
  state.voids += 1;
  return state.voids > SPF_VOID_LIMIT
    ? { kind: "permerror", problem: `more than ${SPF_VOID_LIMIT} void DNS lookups (RFC 7208 §4.6.4 permerror)` }
    : null;
}

/** `tag=value; …` → map (lower-case tags, values trimmed). */
export function tagList(record: string): Map<string, string> {
  const tags = new Map<string, string>();
  for (const part of record.split(";")) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    tags.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
  }
  return tags;
}

/** DKIM: an RSA key at `default._domainkey.<domain>` equal to the key we sign with. */
export async function checkDkim(resolver: Resolver, domain: string, exp: Expectation): Promise<CheckResult> {
  const name = `${DKIM_SELECTOR}._domainkey.${domain}`;
  const expected = exp.dkimPublicKey
    ? `TXT at ${name}: v=DKIM1; k=rsa; p=${exp.dkimPublicKey}`
    : `a DKIM signing key configured for ${domain}, published at ${name}`;
  const answer = await resolver.resolve(name, "TXT");
  if (answer.status === "temporary_failure") return temporary(answer, expected);
  const records = answer.status === "ok" ? answer.records.filter((r) => /(^|;)\s*p=/i.test(r)) : [];
  if (records.length === 0) return { status: "missing", found: null, expected, problem: `no DKIM key at ${name}` };
  if (!exp.dkimPublicKey) {
    return { status: "fail", found: records, expected, problem: "no signing key is configured for this domain" };
  }
  const want = normalizeKeyText(exp.dkimPublicKey);
  for (const record of records) {
    const tags = tagList(record);
    const version = tags.get("v");
    if (version !== undefined && version !== "DKIM1") continue;
    if ((tags.get("k") ?? "rsa").toLowerCase() !== "rsa") continue;
    if ((tags.get("p") ?? "").replace(/\s+/g, "") === want)
      return { status: "pass", found: records, expected, problem: null };
  }
  const revoked = records.some((r) => (tagList(r).get("p") ?? "") === "");
  return {
    status: "fail",
    found: records,
    expected,
    problem: revoked ? "the published key is revoked (empty p=)" : "the published key is not the key we sign with",
  };
}

/** DMARC: exactly one `v=DMARC1` record at `_dmarc.<domain>` with a valid `p=`. */
export async function checkDmarc(resolver: Resolver, domain: string): Promise<CheckResult> {
  const name = `_dmarc.${domain}`;
  const expected = `one TXT record at ${name}: v=DMARC1; p=quarantine (or p=reject / p=none)`;
  const answer = await resolver.resolve(name, "TXT");
  if (answer.status === "temporary_failure") return temporary(answer, expected);
  const records = answer.status === "ok" ? answer.records.filter((r) => /^v\s*=\s*DMARC1\s*(;|$)/i.test(r)) : [];
  if (records.length === 0) return { status: "missing", found: null, expected, problem: `no DMARC record at ${name}` };
  if (records.length > 1) {
    return { status: "fail", found: records, expected, problem: "more than one DMARC record (RFC 7489 §6.6.3)" };
  }
  const policy = tagList(records[0] as string)
    .get("p")
    ?.toLowerCase();
  if (!policy || !["none", "quarantine", "reject"].includes(policy)) {
    return { status: "fail", found: records, expected, problem: "the record has no valid p= policy" };
  }
  return { status: "pass", found: records, expected, problem: null };
}

/** MX: at least one MX of the domain points at one of our inbound hosts. */
export async function checkMx(resolver: Resolver, domain: string, exp: Expectation): Promise<CheckResult> {
  const expected = `MX at ${domain}: ${exp.mxHosts.map((h, i) => `${10 * (i + 1)} ${h}`).join(", ")}`;
  const answer = await resolver.resolve(domain, "MX");
  if (answer.status === "temporary_failure") return temporary(answer, expected);
  if (answer.status !== "ok") return { status: "missing", found: null, expected, problem: "no MX record" };
  const hosts = new Set(exp.mxHosts.map((h) => h.toLowerCase()));
  const ok = answer.records.some((r) => hosts.has((r.split(/\s+/)[1] ?? "").toLowerCase().replace(/\.$/, "")));
  return ok
    ? { status: "pass", found: answer.records, expected, problem: null }
    : { status: "fail", found: answer.records, expected, problem: "no MX points at this service" };
}
