import { and, desc, eq, lt, type SQL, sql } from "drizzle-orm";
import { once } from "../../db/client";
import { type SuppressionRow, suppressions } from "../../db/schema";
import { inListOf } from "../../db/sql";
import type { ServiceContext } from "../../lib/context";
import { Forbidden, NotFound } from "../../lib/errors";
import type { Page } from "../../lib/pagination";
import { iso } from "../../lib/time";
import { suppressionAddress } from "../../mail/address";
import { commitWithAudit } from "../audit/audit.service";
import type { SuppressionWire } from "./suppressions.schemas";

/**
 * The account's suppression list: recipients that hard-bounced or complained. The reputation
 * feature adds to it (in the same batch as the bounce/complaint it records); sends consult it;
 * the account removes entries here.
 */

/**
 * Which of `addresses` the account has suppressed, with the reason, keyed by the suppressed form
 * (`suppressionAddress`: lower-case, no `+tag`), so `Bob+x@Example.com` finds `bob@example.com`.
 */
export async function suppressedAmong(ctx: ServiceContext, addresses: string[]): Promise<Map<string, string>> {
  const keys = [...new Set(addresses.map(suppressionAddress))];
  if (keys.length === 0) return new Map();
  const rows = await SUPPRESSED.all(ctx.db, { accountId: ctx.accountId, keys: JSON.stringify(keys) });
  return new Map(rows.map((r) => [r.address, r.reason]));
}

const SUPPRESSED = once((db) =>
  db
    .select({ address: suppressions.address, reason: suppressions.reason })
    .from(suppressions)
    .where(and(eq(suppressions.accountId, sql.placeholder("accountId")), inListOf(suppressions.address, "keys")))
    .prepare(),
);

/** Newest-first page of the account's suppressions. */
export async function listSuppressions(
  ctx: ServiceContext,
  filters: { address?: string | undefined; reason?: string | undefined },
  page: Page,
): Promise<SuppressionRow[]> {
  const where: SQL[] = [eq(suppressions.accountId, ctx.accountId)];
  if (filters.address) where.push(eq(suppressions.address, suppressionAddress(filters.address)));
  if (filters.reason) where.push(eq(suppressions.reason, filters.reason as SuppressionRow["reason"]));
  if (page.before) where.push(lt(suppressions.id, page.before));
  return ctx.db
    .select()
    .from(suppressions)
    .where(and(...where))
    .orderBy(desc(suppressions.id))
    .limit(page.limit + 1)
    .all();
}

/** Lifts a suppression (audited); 404 when the account has none for the address. */
export async function deleteSuppression(ctx: ServiceContext, address: string): Promise<SuppressionRow> {
  // The list is account-wide: a key restricted to some inboxes may read it but not change it.
  if (ctx.inboxIds) throw new Forbidden("insufficient_scope", "A key restricted to inboxes cannot lift suppressions.");
  const row = await ctx.db
    .select()
    .from(suppressions)
    .where(and(eq(suppressions.accountId, ctx.accountId), eq(suppressions.address, suppressionAddress(address))))
    .get();
  if (!row) throw new NotFound("Suppression");
  await commitWithAudit(
    ctx,
    [ctx.db.delete(suppressions).where(and(eq(suppressions.id, row.id), eq(suppressions.accountId, ctx.accountId)))],
    [
      {
        action: "suppression.deleted",
        target: { type: "suppression", id: row.id },
        inboxId: row.inboxId,
        metadata: { address: row.address, reason: row.reason, source: row.source, message_id: row.messageId },
      },
    ],
  );
  return row;
}

/**
 * Wire shape of a suppression. The list is account-wide, but a key restricted to some inboxes
 * (`visible`) is not told which other inbox's message caused an entry, nor its detail.
 */
export function toSuppressionWire(row: SuppressionRow, visible: string[] | null = null): SuppressionWire {
  if (visible && !(row.inboxId && visible.includes(row.inboxId))) {
    return { ...toSuppressionWire(row), inbox_id: null, message_id: null, detail: null };
  }
  return {
    id: row.id,
    address: row.address,
    reason: row.reason,
    source: row.source,
    inbox_id: row.inboxId,
    message_id: row.messageId,
    detail: row.detail,
    created_at: iso(row.createdAt),
  };
}

/** What screenRecipients answers. */
export interface Screened<A extends { address: string }> {
  kept: { to: A[]; cc: A[]; bcc: A[] };
  dropped: { address: string; reason: string }[];
  remaining: number;
}

/** A send's recipient lists with the suppressed addresses taken out, and those left out with why. */
export async function screenRecipients<A extends { address: string }>(
  ctx: ServiceContext,
  lists: { to: A[]; cc: A[]; bcc: A[] },
): Promise<Screened<A>> {
  const all = [...lists.to, ...lists.cc, ...lists.bcc].map((a) => a.address.toLowerCase());
  const suppressed = await suppressedAmong(ctx, all);
  if (suppressed.size === 0) return { kept: lists, dropped: [], remaining: all.length };
  const reasonOf = (address: string) => suppressed.get(suppressionAddress(address));
  const keep = (list: A[]) => list.filter((a) => !reasonOf(a.address));
  const kept = { to: keep(lists.to), cc: keep(lists.cc), bcc: keep(lists.bcc) };
  // Each address as given (lower-cased, once), with the reason of the suppression it falls under.
  const dropped = [...new Set(all)].flatMap((address) => {
    const reason = reasonOf(address);
    return reason ? [{ address, reason: `suppressed_${reason}` }] : [];
  });
  return { kept, dropped, remaining: kept.to.length + kept.cc.length + kept.bcc.length };
}
