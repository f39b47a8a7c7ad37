import type { DnsAnswer, Resolver } from "../../lib/dns";
import { DKIM_SELECTOR, normalizeKeyText } from "../domains/dkim";

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

/** SPF: exactly one `v=spf1` record at the domain that reaches `include:<spfInclude>`, and no `+all`. */
export async function checkSpf(resolver: Resolver, domain: string, exp: Expectation): Promise<CheckResult> {
  const expected = `one TXT record at ${domain}: v=spf1 include:${exp.spfInclude} ~all (or -all)`;
  const answer = await resolver.resolve(domain, "TXT");
  if (answer.status === "temporary_failure") return temporary(answer, expected);
  if (answer.status !== "ok") return { status: "missing", found: null, expected, problem: "no SPF record" };
  const spf = answer.records.filter((r) => /^v=spf1(\s|$)/i.test(r));
  if (spf.length === 0) return { status: "missing", found: null, expected, problem: "no SPF record" };
  if (spf.length > 1) {
    return { status: "fail", found: spf, expected, problem: "more than one SPF record (RFC 7208 permerror)" };
  }
  const record = spf[0] as string;
  if (/(^|\s)\+?all(\s|$)/i.test(record)) {
    return { status: "fail", found: spf, expected, problem: "`+all` authorises every server on the internet" };
  }
  const walk = await spfReaches(resolver, record, exp.spfInclude.toLowerCase(), { lookups: 0 });
  if (walk === "temporary") {
    return { ...temporary({ status: "temporary_failure", error: "an included SPF record" }, expected), found: spf };
  }
  if (!walk) return { status: "fail", found: spf, expected, problem: `include:${exp.spfInclude} not found` };
  return { status: "pass", found: spf, expected, problem: null };
}

/** Whether the record includes the target, directly or through include:/redirect= (lookup-limited). */
async function spfReaches(
  resolver: Resolver,
  record: string,
  target: string,
  budget: { lookups: number },
): Promise<boolean | "temporary"> {
  const terms = record.toLowerCase().split(/\s+/).slice(1);
  const nested: string[] = [];
  for (const term of terms) {
    const include = /^[+~?]?include:(.+)$/.exec(term)?.[1];
    const redirect = /^redirect=(.+)$/.exec(term)?.[1];
    const name = (include ?? redirect)?.replace(/\.$/, "");
    if (!name) continue;
    if (include && name === target) return true;
    if (redirect && name === target) return true;
    nested.push(name);
  }
  for (const name of nested) {
    if (++budget.lookups > SPF_LOOKUP_LIMIT) return false;
    const answer = await resolver.resolve(name, "TXT");
    if (answer.status === "temporary_failure") return "temporary";
    if (answer.status !== "ok") continue;
    const next = answer.records.find((r) => /^v=spf1(\s|$)/i.test(r));
    if (!next) continue;
    const hit = await spfReaches(resolver, next, target, budget);
    if (hit !== false) return hit;
  }
  return false;
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
