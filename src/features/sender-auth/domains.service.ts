import type { z } from "@hono/zod-openapi";
import { and, count, desc, eq, lt, ne } from "drizzle-orm";
import { config } from "../../config";
import { isUniqueViolation } from "../../db/errors";
import { type DomainRow, domains, inboxes } from "../../db/schema";
import type { Bindings } from "../../env";
import type { ServiceContext } from "../../lib/context";
import { Conflict, Forbidden, NotFound, ValidationFailed } from "../../lib/errors";
import { newId } from "../../lib/ids";
import type { Page } from "../../lib/pagination";
import { iso } from "../../lib/time";
import { commitWithAudit } from "../audit/audit.service";
import { eventStatement, publishEvents } from "../events/events.service";
import { assertDecided, mxHosts, recordsFor, runChecks, spfInclude } from "./compliance.service";
import { DKIM_SELECTOR } from "./dkim";
import { newDomainKey } from "./dkim-keys";
import type { DomainWire, VerifyResultWire } from "./domains.schemas";

/** The service verbs of custom sending domains (HTTP routes and MCP tools call these). */

function assertUnrestricted(ctx: ServiceContext): void {
  if (ctx.inboxIds) throw new Forbidden("insufficient_scope", "A key restricted to inboxes cannot manage domains.");
}

/** `POST /v1/domains`: records the domain (pending) with a fresh DKIM key pair for selector `default`. */
export async function addDomain(ctx: ServiceContext, input: { domain: string }): Promise<DomainRow> {
  assertUnrestricted(ctx);
  const domain = input.domain;
  const shared = config(ctx.env).mailDomain.toLowerCase();
  if (domain === shared || domain.endsWith(`.${shared}`)) {
    throw new ValidationFailed(
      [{ path: "domain", message: `${domain} is this service's shared domain; inboxes on it need no domain setup.` }],
      "The shared domain cannot be added as a custom domain.",
    );
  }
  const mine = await ctx.db
    .select({ id: domains.id })
    .from(domains)
    .where(and(eq(domains.accountId, ctx.accountId), eq(domains.domain, domain)))
    .get();
  if (mine) throw new Conflict("domain_exists", `${domain} is already one of your domains.`, { id: mine.id });
  // Another account holding it verified does not stop the add: that claim may be stale (the
  // domain changed hands). Only a fresh DNS proof with this row's own DKIM key can take it over.

  const now = ctx.now();
  const id = newId("dom", now);
  const key = await newDomainKey(ctx.env, id);
  const row: DomainRow = {
    id,
    accountId: ctx.accountId,
    domain,
    status: "pending",
    dkimSelector: DKIM_SELECTOR,
    dkimPublicKey: key.publicKey,
    dkimPrivateKeySealed: key.sealedPrivateKey,
    spfVerified: false,
    dkimVerified: false,
    dmarcVerified: false,
    mxVerified: false,
    lastCheckedAt: null,
    verifiedAt: null,
    createdAt: now,
    updatedAt: now,
  };
  try {
    await commitWithAudit(
      ctx,
      [ctx.db.insert(domains).values(row)],
      [
        {
          action: "domain.created",
          target: { type: "domain", id },
          inboxId: null,
          metadata: { domain, dkim_selector: DKIM_SELECTOR },
        },
      ],
    );
  } catch (err) {
    if (isUniqueViolation(err, "domains.account_id")) {
      throw new Conflict("domain_exists", `${domain} is already one of your domains.`);
    }
    throw err;
  }
  return row;
}

/** Another account's verified claim on the domain, if any. */
async function claimOf(ctx: ServiceContext, domain: string): Promise<{ id: string; accountId: string } | undefined> {
  return ctx.db
    .select({ id: domains.id, accountId: domains.accountId })
    .from(domains)
    .where(and(eq(domains.domain, domain), eq(domains.status, "verified"), ne(domains.accountId, ctx.accountId)))
    .get();
}

/**
 * The statements and audit entry that release a verified claim (back to pending, DKIM unproven):
 * its inboxes stop receiving and it stops sending, because both require a verified domain.
 */
function releaseStatements(
  ctx: ServiceContext,
  claim: { id: string; accountId: string; domain: string },
  reason: "account_closed" | "fresh_proof_by_another_account",
) {
  const now = ctx.now();
  return {
    statement: ctx.db
      .update(domains)
      .set({ status: "pending", dkimVerified: false, verifiedAt: null, updatedAt: now })
      .where(and(eq(domains.id, claim.id), eq(domains.accountId, claim.accountId), eq(domains.status, "verified"))),
    entry: {
      action: "domain.released",
      accountId: claim.accountId,
      target: { type: "domain", id: claim.id },
      inboxId: null,
      metadata: { domain: claim.domain, reason },
    },
  };
}

/** Account close: the statements and audit entries that release every domain it holds verified. */
export async function domainReleasesOnClose(ctx: ServiceContext) {
  const held = await ctx.db
    .select({ id: domains.id, accountId: domains.accountId, domain: domains.domain })
    .from(domains)
    .where(and(eq(domains.accountId, ctx.accountId), eq(domains.status, "verified")))
    .all();
  const releases = held.map((d) => releaseStatements(ctx, d, "account_closed"));
  return { statements: releases.map((r) => r.statement), entries: releases.map((r) => r.entry) };
}

/** Newest-first page of the account's domains. */
export async function listDomains(ctx: ServiceContext, page: Page): Promise<DomainRow[]> {
  return ctx.db
    .select()
    .from(domains)
    .where(and(eq(domains.accountId, ctx.accountId), ...(page.before ? [lt(domains.id, page.before)] : [])))
    .orderBy(desc(domains.id))
    .limit(page.limit + 1)
    .all();
}

/** One domain of the account; 404 for anything else (another account's included). */
export async function getDomain(ctx: ServiceContext, domainId: string): Promise<DomainRow> {
  const row = await ctx.db
    .select()
    .from(domains)
    .where(and(eq(domains.id, domainId), eq(domains.accountId, ctx.accountId)))
    .get();
  if (!row) throw new NotFound("Domain");
  return row;
}

/** `DELETE /v1/domains/:id`: refused (409) while inboxes use it; the key goes with the row. */
export async function deleteDomain(ctx: ServiceContext, domainId: string): Promise<DomainRow> {
  assertUnrestricted(ctx);
  const row = await getDomain(ctx, domainId);
  const used = await ctx.db
    .select({ n: count() })
    .from(inboxes)
    .where(and(eq(inboxes.accountId, ctx.accountId), eq(inboxes.domain, row.domain)))
    .get();
  if ((used?.n ?? 0) > 0) {
    throw new Conflict("domain_in_use", `${row.domain} has ${used?.n} inbox(es); deactivate and remove them first.`, {
      inboxes: used?.n,
    });
  }
  await commitWithAudit(
    ctx,
    [ctx.db.delete(domains).where(and(eq(domains.id, row.id), eq(domains.accountId, ctx.accountId)))],
    [
      {
        action: "domain.deleted",
        target: { type: "domain", id: row.id },
        inboxId: null,
        metadata: { domain: row.domain, status: row.status },
      },
    ],
  );
  return row;
}

export type VerifyResult = z.infer<typeof VerifyResultWire>;

/**
 * `POST /v1/domains/:id/verify`: looks the records up live. SPF, DKIM and DMARC passing make the
 * domain `verified` (event `domain.verified`); MX is reported (inbound needs it, sending does
 * not). A verified domain stays verified: every send re-checks DNS anyway. A temporary DNS
 * failure decides nothing (503 `dns_unavailable`).
 */
export async function verifyDomain(ctx: ServiceContext, domainId: string): Promise<VerifyResult> {
  assertUnrestricted(ctx);
  const row = await getDomain(ctx, domainId);
  // Live: the DNS cache is bypassed, so a record published a moment ago is seen now.
  const checks = await runChecks(
    ctx.env,
    row.domain,
    { spfInclude: spfInclude(ctx.env), dkimPublicKey: row.dkimPublicKey, mxHosts: mxHosts(ctx.env) },
    { fresh: true },
  );
  assertDecided(checks, ["spf", "dkim", "dmarc", "mx"]);
  const flags = {
    spfVerified: checks.spf.status === "pass",
    dkimVerified: checks.dkim.status === "pass",
    dmarcVerified: checks.dmarc.status === "pass",
    mxVerified: checks.mx.status === "pass",
  };
  const passes = flags.spfVerified && flags.dkimVerified && flags.dmarcVerified;
  const becomesVerified = passes && row.status !== "verified";
  // A fresh proof wins over a stale claim: DKIM passed with this row's own key at the one
  // selector every account uses, so that record now names this account, and the holder's
  // key no longer verifies. The holder is released in the same batch, audited on both sides.
  const stale = becomesVerified ? await claimOf(ctx, row.domain) : undefined;
  const release = stale
    ? releaseStatements(ctx, { ...stale, domain: row.domain }, "fresh_proof_by_another_account")
    : null;
  const now = ctx.now();
  const next: DomainRow = {
    ...row,
    ...flags,
    status: row.status === "verified" || passes ? "verified" : "pending",
    lastCheckedAt: now,
    verifiedAt: becomesVerified ? now : row.verifiedAt,
    updatedAt: now,
  };
  const event = becomesVerified
    ? eventStatement(ctx, "domain.verified", {}, { domain_id: row.id, domain: row.domain, ...wireFlags(next) })
    : null;
  const problems = Object.fromEntries(
    (["spf", "dkim", "dmarc", "mx"] as const)
      .filter((n) => checks[n].status !== "pass")
      .map((n) => [n, { status: checks[n].status, found: checks[n].found, problem: checks[n].problem }]),
  );
  try {
    await commitWithAudit(
      ctx,
      [
        ...(release ? [release.statement] : []),
        ctx.db
          .update(domains)
          .set({
            ...flags,
            status: next.status,
            lastCheckedAt: now,
            verifiedAt: next.verifiedAt,
            updatedAt: now,
          })
          .where(and(eq(domains.id, row.id), eq(domains.accountId, ctx.accountId))),
        ...(event ? [event.statement] : []),
      ],
      [
        {
          action: becomesVerified ? "domain.verified" : "domain.verification_checked",
          target: { type: "domain", id: row.id },
          inboxId: null,
          metadata: {
            domain: row.domain,
            status: next.status,
            ...wireFlags(next),
            problems,
            event_id: event?.id ?? null,
            ...(release ? { replaced_stale_claim: true } : {}),
          },
        },
        ...(release ? [release.entry] : []),
      ],
    );
  } catch (err) {
    if (isUniqueViolation(err, "domains.domain")) {
      throw new Conflict("domain_taken", `${row.domain} is already verified by another account.`);
    }
    throw err;
  }
  if (event) await publishEvents(ctx.env, [event.id]);
  return {
    id: row.id,
    domain: row.domain,
    status: next.status,
    ...wireFlags(next),
    next_step: nextStep(next, checks),
    dns_records: dnsRecords(ctx.env, next),
  };
}

function wireFlags(row: DomainRow) {
  return {
    spf_verified: row.spfVerified,
    dkim_verified: row.dkimVerified,
    dmarc_verified: row.dmarcVerified,
    mx_verified: row.mxVerified,
  };
}

function nextStep(row: DomainRow, checks: Awaited<ReturnType<typeof runChecks>>): string | null {
  const missing = (["spf", "dkim", "dmarc"] as const).filter((n) => checks[n].status !== "pass");
  if (missing.length > 0) {
    return `Publish the ${missing.map((m) => m.toUpperCase()).join(", ")} record(s) listed in dns_records (${missing
      .map((m) => `${m}: ${checks[m].problem}`)
      .join("; ")}), then verify again. DNS changes can take a few minutes to be visible.`;
  }
  if (!row.mxVerified) {
    return `Sending is ready. To receive mail at ${row.domain}, publish the MX records in dns_records and route the domain to this service.`;
  }
  return null;
}

/** The records to publish, each with its status from the last check. */
function dnsRecords(env: Bindings, row: DomainRow) {
  const flag = { spf: row.spfVerified, dkim: row.dkimVerified, dmarc: row.dmarcVerified, mx: row.mxVerified };
  return recordsFor(env, row.domain, row.dkimPublicKey).map((r) => ({
    ...r,
    status: flag[r.purpose]
      ? ("verified" as const)
      : row.lastCheckedAt === null
        ? ("pending" as const)
        : ("failed" as const),
  }));
}

/** Wire shape of a domain (never the private key, sealed or not). */
export function toDomainWire(env: Bindings, row: DomainRow): z.infer<typeof DomainWire> {
  return {
    id: row.id,
    domain: row.domain,
    status: row.status,
    dkim_selector: row.dkimSelector,
    dns_records: dnsRecords(env, row),
    ...wireFlags(row),
    last_checked_at: row.lastCheckedAt === null ? null : iso(row.lastCheckedAt),
    verified_at: row.verifiedAt === null ? null : iso(row.verifiedAt),
    created_at: iso(row.createdAt),
    updated_at: iso(row.updatedAt),
  };
}
