import type { z } from "@hono/zod-openapi";
import { and, count, desc, eq, lt, type SQL, sql } from "drizzle-orm";
import { config } from "../../config";
import type { Statement } from "../../db/compiled";
import { isLimitReached, isUniqueViolation } from "../../db/errors";
import { type AccountRow, type InboxRow, inboxes } from "../../db/schema";
import { abortIfOver, inList } from "../../db/sql";
import { inboxCounter, notifyInboxEnabled } from "../../durable-objects/inbox-counter.client";
import { type BaseContext, forAccount, type ServiceContext } from "../../lib/context";
import { Conflict, Forbidden, NotFound, ValidationFailed } from "../../lib/errors";
import { newId } from "../../lib/ids";
import type { Page } from "../../lib/pagination";
import { tierLimits } from "../../lib/tiers";
import { iso } from "../../lib/time";
import { commitWithAudit } from "../audit/audit.service";
import { eventStatement, publishEvents } from "../events/events.service";
import { DEFAULT_AUTO_REPLY_LIMIT, normalizeRules, policyOf } from "../screening/screening.service";
import { isVerifiedDomainOf } from "../sender-auth/domain-ownership";
import type { CreateInboxInput, InboxWire, PatchInboxInput } from "./inboxes.schemas";

/** `{username}--{short_id}@{MAIL_DOMAIN}` on the shared domain. */
export function sharedAddress(username: string, shortId: string, mailDomain: string): string {
  return `${username}--${shortId}@${mailDomain}`.toLowerCase();
}

type NewInboxInput = {
  username: string;
  display_name?: string | undefined;
  labels?: string[] | undefined;
  screening?: { mode: "flag" | "quarantine" | "reject" } | undefined;
  sender_rules?: { allow: string[]; block: string[] } | undefined;
  auto_reply_limit?: number | undefined;
};

/** The stored policy column: only what differs from the defaults (null when nothing does). */
function policyColumn(mode: string | undefined, limit: number | undefined): InboxRow["screening"] {
  const p: NonNullable<InboxRow["screening"]> = {};
  if (mode && mode !== "flag") p.mode = mode as "quarantine" | "reject";
  if (limit !== undefined && limit !== DEFAULT_AUTO_REPLY_LIMIT) p.auto_reply_limit = limit;
  return Object.keys(p).length ? p : null;
}

/** Builds (but does not write) a new inbox row at `address` on `domain`. */
function newInboxRow(accountId: string, domain: string, address: string, input: NewInboxInput, now: number): InboxRow {
  return {
    id: newId("inbox", now),
    accountId,
    username: input.username,
    domain: domain.toLowerCase(),
    address: address.toLowerCase(),
    displayName: input.display_name ?? null,
    status: "active",
    disabledReason: null,
    labels: input.labels ?? [],
    screening: policyColumn(input.screening?.mode, input.auto_reply_limit),
    senderRules: input.sender_rules ? normalizeRules(input.sender_rules) : null,
    createdAt: now,
    updatedAt: now,
  };
}

/** Builds (but does not write) a new inbox row on the shared domain. */
export function newSharedInbox(
  account: Pick<AccountRow, "id" | "shortId">,
  mailDomain: string,
  input: NewInboxInput,
  now: number,
): InboxRow {
  return newInboxRow(account.id, mailDomain, sharedAddress(input.username, account.shortId, mailDomain), input, now);
}

/** Builds (but does not write) a new inbox row on a verified custom domain: `{username}@{domain}`. */
function newCustomInbox(account: Pick<AccountRow, "id">, domain: string, input: NewInboxInput, now: number): InboxRow {
  return newInboxRow(account.id, domain, `${input.username}@${domain}`, input, now);
}

/** The `inbox.created` / `inbox.enabled` / `inbox.disabled` event of a change, for its batch. */
export function inboxEvent(
  ctx: ServiceContext,
  type: "inbox.created" | "inbox.enabled" | "inbox.disabled",
  row: InboxRow,
): { id: string; statement: Statement } {
  return eventStatement(
    ctx,
    type,
    { inboxId: row.id },
    {
      inbox_id: row.id,
      address: row.address,
      status: row.status,
      disabled_reason: row.disabledReason ?? null,
    },
  );
}

/** Creates an inbox on the shared domain, or on a custom domain the account has verified. */
export async function createInbox(
  ctx: ServiceContext,
  account: AccountRow,
  input: z.infer<typeof CreateInboxInput>,
): Promise<InboxRow> {
  if (ctx.inboxIds) throw new Forbidden("insufficient_scope", "A key restricted to inboxes cannot create inboxes.");
  const mailDomain = config(ctx.env).mailDomain.toLowerCase();
  const custom = input.domain && input.domain !== mailDomain ? input.domain : null;
  if (custom && !(await isVerifiedDomainOf(ctx, custom))) {
    throw new ValidationFailed(
      [{ path: "domain", message: `Domain ${input.domain} is not a verified domain of this account.` }],
      "Custom domains must be added and verified first.",
    );
  }
  const limits = tierLimits(config(ctx.env).tiers, account.tier);
  const limitReached = () =>
    new Forbidden("inbox_limit_reached", `The ${account.tier} tier allows ${limits.max_inboxes} inboxes.`, {
      max_inboxes: limits.max_inboxes,
    });
  // The early check answers the common case cheaply; the guard in the batch makes it exact.
  const existing = await ctx.db.select({ n: count() }).from(inboxes).where(eq(inboxes.accountId, ctx.accountId)).get();
  if ((existing?.n ?? 0) >= limits.max_inboxes) throw limitReached();
  const row = custom
    ? newCustomInbox(account, custom, input, ctx.now())
    : newSharedInbox(account, mailDomain, input, ctx.now());
  const event = inboxEvent(ctx, "inbox.created", row);
  try {
    await commitWithAudit(
      ctx,
      [
        ctx.db.insert(inboxes).values(row),
        abortIfOver(
          ctx.db,
          "inboxes",
          sql`SELECT count(*) FROM ${inboxes} WHERE ${inboxes.accountId} = ${ctx.accountId}`,
          limits.max_inboxes,
        ),
        event.statement,
      ],
      [
        {
          action: "inbox.created",
          target: { type: "inbox", id: row.id },
          inboxId: row.id,
          metadata: { address: row.address, event_id: event.id },
        },
      ],
    );
  } catch (err) {
    if (isLimitReached(err)) throw limitReached();
    if (isUniqueViolation(err, "inboxes.address")) {
      throw new Conflict("address_taken", `The address ${row.address} is already taken.`, { address: row.address });
    }
    throw err;
  }
  await publishEvents(ctx.env, [event.id]);
  return row;
}

function scoped(ctx: ServiceContext, ...extra: SQL[]): SQL | undefined {
  const where = [eq(inboxes.accountId, ctx.accountId), ...extra];
  if (ctx.inboxIds) where.push(inList(inboxes.id, ctx.inboxIds));
  return and(...where);
}

/** Newest-first page of the caller's inboxes (only the key's inboxes for a restricted key). */
export async function listInboxes(ctx: ServiceContext, page: Page): Promise<InboxRow[]> {
  return ctx.db
    .select()
    .from(inboxes)
    .where(scoped(ctx, ...(page.before ? [lt(inboxes.id, page.before)] : [])))
    .orderBy(desc(inboxes.id))
    .limit(page.limit + 1)
    .all();
}

/** One inbox of the caller; 404 for anything else, including other accounts' inboxes. */
export async function getInbox(ctx: ServiceContext, inboxId: string): Promise<InboxRow> {
  const row = await ctx.db
    .select()
    .from(inboxes)
    .where(scoped(ctx, eq(inboxes.id, inboxId)))
    .get();
  if (!row) throw new NotFound("Inbox");
  return row;
}

/** Updates display name and labels. */
export async function patchInbox(
  ctx: ServiceContext,
  inboxId: string,
  patch: z.infer<typeof PatchInboxInput>,
): Promise<InboxRow> {
  const current = await getInbox(ctx, inboxId);
  const next: InboxRow = {
    ...current,
    displayName: patch.display_name === undefined ? current.displayName : patch.display_name,
    labels: patch.labels ?? current.labels,
    screening: policyColumn(
      patch.screening?.mode ?? policyOf(current).mode,
      patch.auto_reply_limit ?? policyOf(current).autoReplyLimit,
    ),
    senderRules: patch.sender_rules ? normalizeRules(patch.sender_rules) : current.senderRules,
    updatedAt: ctx.now(),
  };
  await commitWithAudit(
    ctx,
    [
      ctx.db
        .update(inboxes)
        .set({
          displayName: next.displayName,
          labels: next.labels,
          screening: next.screening,
          senderRules: next.senderRules,
          updatedAt: next.updatedAt,
        })
        .where(scoped(ctx, eq(inboxes.id, inboxId))),
    ],
    [
      {
        action: "inbox.updated",
        target: { type: "inbox", id: inboxId },
        inboxId,
        metadata: { changes: Object.keys(patch) },
      },
    ],
  );
  return next;
}

/** Disabled for its bounce or complaint rate: only an operator may re-enable it. */
function disabledForRates(row: InboxRow): boolean {
  return row.status === "disabled" && (row.disabledReason === "bounce_rate" || row.disabledReason === "complaint_rate");
}

/**
 * Soft deactivation: data stays, inbound mail is refused, sends are refused. An inbox disabled for
 * its rates keeps that reason (deactivating and re-enabling must not dodge the operator review).
 */
export async function deactivateInbox(ctx: ServiceContext, inboxId: string): Promise<InboxRow> {
  const current = await getInbox(ctx, inboxId);
  if (disabledForRates(current)) return current;
  return setInboxStatus(ctx, inboxId, "deactivated");
}

/**
 * Re-activates a deactivated inbox. One disabled for its bounce or complaint rate is refused
 * (409 `reputation_review_required`, audited): the account re-enabling it at once would let queued
 * mail leave until the next counter call, over and over. An operator re-enables it (`adminEnableInbox`).
 */
export async function enableInbox(ctx: ServiceContext, inboxId: string): Promise<InboxRow> {
  const current = await getInbox(ctx, inboxId);
  if (disabledForRates(current)) {
    await commitWithAudit(
      ctx,
      [],
      [
        {
          action: "inbox.enable_refused",
          target: { type: "inbox", id: inboxId },
          inboxId,
          metadata: { reason: "reputation_review_required", disabled_reason: current.disabledReason },
        },
      ],
    );
    throw new Conflict(
      "reputation_review_required",
      `The inbox was disabled for its ${current.disabledReason === "bounce_rate" ? "bounce" : "complaint"} rate; an operator must review and re-enable it.`,
      { disabled_reason: current.disabledReason },
    );
  }
  return setInboxStatus(ctx, inboxId, null);
}

/**
 * `POST /v1/admin/inboxes/:inbox_id/enable`: an operator re-enables an inbox (whatever why it was
 * disabled), audited with the figures it had. The history stays in the counter's window, so a
 * further bounce or complaint over the threshold disables it again at once.
 */
export async function adminEnableInbox(base: BaseContext, inboxId: string): Promise<InboxRow> {
  const owner = await base.db
    .select({ accountId: inboxes.accountId })
    .from(inboxes)
    .where(eq(inboxes.id, inboxId))
    .get();
  if (!owner) throw new NotFound("Inbox");
  const ctx = forAccount(base, owner.accountId);
  const f = await inboxCounter(ctx.env, inboxId).snapshot(ctx.now(), ctx.accountId);
  const figures = f
    ? {
        window_days: f.window_days,
        sent: f.sent,
        bounced: f.bounced,
        complained: f.complained,
        bounce_rate: Math.round(f.bounce_rate * 1e6) / 1e6,
        complaint_rate: Math.round(f.complaint_rate * 1e6) / 1e6,
      }
    : null;
  return setInboxStatus(ctx, inboxId, null, { operator_review: true, reputation: figures });
}

/** Moves an inbox to active (`reason` null) or disabled for `reason`, audited; no-op if already there. */
async function setInboxStatus(
  ctx: ServiceContext,
  inboxId: string,
  reason: InboxRow["disabledReason"],
  auditExtra: Record<string, unknown> = {},
): Promise<InboxRow> {
  const current = await getInbox(ctx, inboxId);
  const status = reason === null ? "active" : "disabled";
  if (current.status === status && current.disabledReason === reason) {
    // Already active in D1, but a previous operator enable may have failed to reach the counter
    // after its commit: an operator telling it again repairs that (idempotent). The account may
    // not: a counter that remembers a disable D1 lacks is a rate disable whose D1 write was lost,
    // and clearing it would let sends through until the next input.
    if (reason === null && auditExtra.operator_review) await notifyInboxEnabled(ctx.env, inboxId, ctx.now());
    return current;
  }
  const next: InboxRow = { ...current, status, disabledReason: reason, updatedAt: ctx.now() };
  // A deactivation is reported as `inbox.disabled` too (with disabled_reason "deactivated"):
  // to a subscriber it is the same fact, the inbox stopped taking mail.
  const event = inboxEvent(ctx, reason === null ? "inbox.enabled" : "inbox.disabled", next);
  await commitWithAudit(
    ctx,
    [
      ctx.db
        .update(inboxes)
        .set({ status, disabledReason: reason, updatedAt: next.updatedAt })
        .where(scoped(ctx, eq(inboxes.id, inboxId))),
      event.statement,
    ],
    [
      {
        action: reason === null ? "inbox.enabled" : reason === "deactivated" ? "inbox.deactivated" : "inbox.disabled",
        target: { type: "inbox", id: inboxId },
        inboxId,
        metadata: {
          previous_status: current.status,
          previous_reason: current.disabledReason,
          ...auditExtra,
          event_id: event.id,
        },
      },
    ],
  );
  await publishEvents(ctx.env, [event.id]);
  // The counter forgets its disable only now that D1 says active: the next input over a
  // threshold disables the inbox again.
  if (reason === null) await notifyInboxEnabled(ctx.env, inboxId, ctx.now());
  return next;
}

/** Wire shape of an inbox. */
export function toInboxWire(row: InboxRow): z.infer<typeof InboxWire> {
  return {
    id: row.id,
    username: row.username,
    domain: row.domain,
    address: row.address,
    display_name: row.displayName,
    status: row.status,
    disabled_reason: row.disabledReason ?? null,
    labels: row.labels,
    screening: { mode: policyOf(row).mode },
    sender_rules: { allow: policyOf(row).allow, block: policyOf(row).block },
    auto_reply_limit: policyOf(row).autoReplyLimit,
    created_at: iso(row.createdAt),
    updated_at: iso(row.updatedAt),
  };
}
