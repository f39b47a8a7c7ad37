import { and, eq } from "drizzle-orm";
import { config } from "../../config";
import { type DomainRow, domains, type InboxRow } from "../../db/schema";
import type { Bindings } from "../../env";
import { benchHooks } from "../../lib/bench";
import type { ServiceContext } from "../../lib/context";
import { type DnsAnswer, type DnsType, dnsResolver, type Resolver } from "../../lib/dns";
import { NotFound, SendBlocked, ServiceUnavailable } from "../../lib/errors";
import { getInbox } from "../inboxes/inboxes.service";
import { DKIM_SELECTOR, dkimRecordValue } from "./dkim";
import { sharedDomainKey } from "./dkim-keys";
import { type CheckResult, checkDkim, checkDmarc, checkMx, checkSpf, type Expectation, tagList } from "./dns-checks";

export { DEFAULT_MX_HOSTS, DEFAULT_SPF_INCLUDE } from "../../config";
/** The DMARC record we suggest: enforcing, relaxed alignment. */
export const SUGGESTED_DMARC = "v=DMARC1; p=quarantine; adkim=r; aspf=r";
/** Seconds a caller is asked to wait after a temporary DNS failure. */
const DNS_RETRY_AFTER_SECONDS = 30;

/** A temporary DNS failure: nothing was decided, the send is neither allowed nor blocked. Retry later. */
export class DnsUnavailable extends ServiceUnavailable {
  constructor(domain: string, checks: Record<string, string | null>) {
    super(
      "dns_unavailable",
      `The DNS records of ${domain} could not be looked up right now, so sender authentication could not be checked. Nothing was sent; retry shortly.`,
      { domain, checks },
      DNS_RETRY_AFTER_SECONDS,
    );
  }
}

export function spfInclude(env: Bindings): string {
  return config(env).spfInclude;
}

export function mxHosts(env: Bindings): string[] {
  return config(env).inboundMxHosts;
}

/**
 * The resolver sender authentication uses: the isolate's (DoH in production, a fake in tests),
 * except that with ENVIRONMENT exactly "development" the shared MAIL_DOMAIN answers from
 * configuration, so local development and the test suite send from it with no network. A
 * bench-only delay (BENCH_DNS_DELAY_MS, development only) stands in for a cold cache. Only
 * development (`npm run dev`, the test suite, the benches) may take the shared domain's records
 * from configuration: any other ENVIRONMENT ("production", "staging", a typo) checks real DNS,
 * so the gate fails closed.
 */
export function authResolver(env: Bindings, options: { fresh?: boolean } = {}): Resolver {
  const shared = dnsResolver();
  // `fresh`: every lookup bypasses the DNS cache (verify_domain is a live check).
  const base: Resolver = options.fresh
    ? { resolve: (name, type) => shared.resolve(name, type, { fresh: true }) }
    : shared;
  if (!config(env).isDevelopment) return base;
  const mailDomain = config(env).mailDomain.toLowerCase();
  const delayMs = benchHooks(env).dnsDelayMs;
  return {
    async resolve(rawName: string, type: DnsType): Promise<DnsAnswer> {
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      const name = rawName.toLowerCase().replace(/\.$/, "");
      if (name !== mailDomain && !name.endsWith(`.${mailDomain}`)) return base.resolve(name, type);
      const records = await sharedDomainRecords(env);
      const answer = records.find((r) => r.name === name && r.type === type);
      return answer ? { status: "ok", records: [answer.value], ttl: 300 } : { status: "nxdomain" };
    },
  };
}

export interface DnsRecordSpec {
  type: "TXT" | "MX";
  name: string;
  value: string;
  purpose: "spf" | "dkim" | "dmarc" | "mx";
}

/** The records a domain should publish, given the DKIM public key we sign its mail with. */
export function recordsFor(env: Bindings, domain: string, publicKey: string | null): DnsRecordSpec[] {
  const hosts = mxHosts(env);
  return [
    { type: "TXT", name: domain, value: `v=spf1 include:${spfInclude(env)} ~all`, purpose: "spf" },
    ...(publicKey
      ? [
          {
            type: "TXT" as const,
            name: `${DKIM_SELECTOR}._domainkey.${domain}`,
            value: dkimRecordValue(publicKey),
            purpose: "dkim" as const,
          },
        ]
      : []),
    { type: "TXT", name: `_dmarc.${domain}`, value: SUGGESTED_DMARC, purpose: "dmarc" },
    ...hosts.map((h, i) => ({
      type: "MX" as const,
      name: domain,
      value: `${10 * (i + 1)} ${h}`,
      purpose: "mx" as const,
    })),
  ];
}

async function sharedDomainRecords(env: Bindings): Promise<DnsRecordSpec[]> {
  const key = await sharedDomainKey(env);
  return recordsFor(env, config(env).mailDomain.toLowerCase(), key?.publicKey ?? null);
}

/** The account's row for a custom domain (any status), or null. */
export async function ownedDomain(ctx: ServiceContext, domain: string): Promise<DomainRow | null> {
  return (
    (await ctx.db
      .select()
      .from(domains)
      .where(and(eq(domains.accountId, ctx.accountId), eq(domains.domain, domain.toLowerCase())))
      .get()) ?? null
  );
}

/** What `domain` must publish for this account: null when the domain is neither shared nor the account's. */
export async function expectationFor(ctx: ServiceContext, domain: string): Promise<Expectation | null> {
  const name = domain.toLowerCase();
  let publicKey: string | null;
  if (name === config(ctx.env).mailDomain.toLowerCase()) {
    publicKey = (await sharedDomainKey(ctx.env))?.publicKey ?? null;
  } else {
    const row = await ownedDomain(ctx, name);
    if (!row) return null;
    publicKey = row.dkimPublicKey;
  }
  return { spfInclude: spfInclude(ctx.env), dkimPublicKey: publicKey, mxHosts: mxHosts(ctx.env) };
}

export interface DomainChecks {
  domain: string;
  spf: CheckResult;
  dkim: CheckResult;
  dmarc: CheckResult;
  mx: CheckResult;
}

/**
 * All four checks of a domain against an expectation, looked up in parallel. `fresh` bypasses
 * the DNS cache (verify); the gate and the compliance endpoints use cached answers.
 */
export async function runChecks(
  env: Bindings,
  domain: string,
  exp: Expectation,
  options: { withMx?: boolean; fresh?: boolean } = {},
): Promise<DomainChecks> {
  const resolver = authResolver(env, { fresh: options.fresh });
  const withMx = options.withMx ?? true;
  const skipped: CheckResult = { status: "missing", found: null, expected: "", problem: "not checked" };
  const [spf, dkim, dmarc, mx] = await Promise.all([
    checkSpf(resolver, domain, exp),
    checkDkim(resolver, domain, exp),
    checkDmarc(resolver, domain),
    withMx ? checkMx(resolver, domain, exp) : Promise.resolve(skipped),
  ]);
  return { domain, spf, dkim, dmarc, mx };
}

/** Throws DnsUnavailable when any of the named checks could not be looked up. */
export function assertDecided(checks: DomainChecks, names: ("spf" | "dkim" | "dmarc" | "mx")[]): void {
  const temp = names.filter((n) => checks[n].temporary);
  if (temp.length > 0) {
    throw new DnsUnavailable(checks.domain, Object.fromEntries(temp.map((n) => [n, checks[n].problem])));
  }
}

/**
 * The gate before every send: SPF, DKIM and DMARC of the inbox's domain must all pass. A failure
 * is `SendBlocked` (`spf_failed` | `dkim_failed` | `dmarc_failed`) with what was found and what
 * was expected; a temporary DNS failure is DnsUnavailable (503, retry), never a pass.
 */
export async function enforceSenderAuth(ctx: ServiceContext, inbox: InboxRow): Promise<void> {
  const domain = inbox.domain.toLowerCase();
  const exp = (await expectationFor(ctx, domain)) ?? {
    spfInclude: spfInclude(ctx.env),
    dkimPublicKey: null,
    mxHosts: mxHosts(ctx.env),
  };
  const checks = await runChecks(ctx.env, domain, exp, { withMx: false });
  assertDecided(checks, ["spf", "dkim", "dmarc"]);
  for (const name of ["spf", "dkim", "dmarc"] as const) {
    const c = checks[name];
    if (c.status === "pass") continue;
    throw new SendBlocked(
      `${name}_failed`,
      `Sending from ${domain} is blocked: ${name.toUpperCase()} ${c.status === "missing" ? "is missing" : "failed"} (${c.problem}).`,
      {
        domain,
        check: name,
        status: c.status,
        found: c.found,
        expected: c.expected,
        problem: c.problem,
      },
    );
  }
}

export interface ComplianceReport {
  domain: string;
  spf: CheckResult;
  dkim: CheckResult;
  dmarc: CheckResult;
  mx: CheckResult;
  send_allowed: boolean;
}

/** `GET /v1/compliance/check?domain=`: the gate's view of a domain (the shared one or the account's). */
export async function checkCompliance(ctx: ServiceContext, domain: string): Promise<ComplianceReport> {
  const name = domain.toLowerCase().replace(/\.$/, "");
  const exp = await expectationFor(ctx, name);
  if (!exp) throw new NotFound("Domain");
  const checks = await runChecks(ctx.env, name, exp);
  assertDecided(checks, ["spf", "dkim", "dmarc", "mx"]);
  return {
    ...checks,
    send_allowed: checks.spf.status === "pass" && checks.dkim.status === "pass" && checks.dmarc.status === "pass",
  };
}

/** Wire shape of a report (the route's `data` and the `check_compliance` tool's result). */
export function toComplianceWire(r: ComplianceReport) {
  const wire = (c: CheckResult) => ({ status: c.status, found: c.found, expected: c.expected, problem: c.problem });
  return {
    domain: r.domain,
    spf: wire(r.spf),
    dkim: wire(r.dkim),
    dmarc: wire(r.dmarc),
    mx: wire(r.mx),
    send_allowed: r.send_allowed,
  };
}

export interface ReadinessCheck {
  name: string;
  passed: boolean;
  points: number;
  max_points: number;
  detail: string;
}

/**
 * `GET /v1/compliance/readiness/:inbox_id`: 0–100 from the checks that decide whether mail from
 * the inbox is sent and lands (the three gate checks weigh most; MX, an enforcing DMARC policy
 * and the inbox being active make up the rest).
 */
export async function readiness(
  ctx: ServiceContext,
  inboxId: string,
): Promise<{ inbox_id: string; domain: string; score: number; send_allowed: boolean; checks: ReadinessCheck[] }> {
  const inbox = await getInbox(ctx, inboxId);
  const report = await checkCompliance(ctx, inbox.domain);
  const policy = tagList(report.dmarc.found?.[0] ?? "")
    .get("p")
    ?.toLowerCase();
  const line = (c: CheckResult) => (c.status === "pass" ? "ok" : `${c.status}: ${c.problem}; expected ${c.expected}`);
  const checks: ReadinessCheck[] = [
    { name: "spf", passed: report.spf.status === "pass", points: 0, max_points: 25, detail: line(report.spf) },
    { name: "dkim", passed: report.dkim.status === "pass", points: 0, max_points: 25, detail: line(report.dkim) },
    { name: "dmarc", passed: report.dmarc.status === "pass", points: 0, max_points: 20, detail: line(report.dmarc) },
    {
      name: "dmarc_enforced",
      passed: policy === "quarantine" || policy === "reject",
      points: 0,
      max_points: 10,
      detail: policy ? `p=${policy}` : "no DMARC policy",
    },
    { name: "mx", passed: report.mx.status === "pass", points: 0, max_points: 10, detail: line(report.mx) },
    {
      name: "inbox_active",
      passed: inbox.status === "active",
      points: 0,
      max_points: 10,
      detail: inbox.status === "active" ? "ok" : `disabled (${inbox.disabledReason})`,
    },
  ];
  for (const c of checks) c.points = c.passed ? c.max_points : 0;
  return {
    inbox_id: inbox.id,
    domain: inbox.domain,
    score: checks.reduce((s, c) => s + c.points, 0),
    send_allowed: report.send_allowed && inbox.status === "active",
    checks,
  };
}
