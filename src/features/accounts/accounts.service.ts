import type { z } from "@hono/zod-openapi";
import { and, desc, eq, isNull, lt, or, type SQL, sql } from "drizzle-orm";
import type { SQLiteColumn } from "drizzle-orm/sqlite-core";
import { config } from "../../config";
import type { Db } from "../../db/client";
import { isUniqueViolation } from "../../db/errors";
import type { InboxRow } from "../../db/schema";
import { type AccountRow, type ApiKeyRow, accounts, apiKeys, inboxes } from "../../db/schema";
import type { Bindings } from "../../env";
import { type BaseContext, forAccount, type ServiceContext } from "../../lib/context";
import { Conflict, NotFound, ValidationFailed } from "../../lib/errors";
import { newId, randomBase32 } from "../../lib/ids";
import type { Page } from "../../lib/pagination";
import { NEW_ACCOUNT_PERIOD_MS, NEW_ACCOUNT_SEND_LIMIT, tierLimits } from "../../lib/tiers";
import { iso } from "../../lib/time";
import type { CreateKeyInput } from "../api-keys/api-keys.schemas";
import {
  createKey,
  type KeyHasher,
  newKeyRow,
  setAccountKeysBlocked,
  setAccountKeysTier,
} from "../api-keys/api-keys.service";
import { commitWithAudit } from "../audit/audit.service";
import { publishEvents } from "../events/events.service";
import { inboxEvent, newSharedInbox } from "../inboxes/inboxes.service";
import { domainReleasesOnClose } from "../sender-auth/domains.service";
import type { AccountPatch, AccountWire, AdminAccountPatch, RegisterInput } from "./accounts.schemas";

/**
 * Creates an account, its first full key and a sandbox inbox, with their audit entries, in one
 * batch. The sandbox inbox is `sandbox--{short_id}@{MAIL_DOMAIN}`.
 */
export async function register(
  base: BaseContext,
  input: z.infer<typeof RegisterInput>,
  opts: { hashKey?: KeyHasher } = {},
): Promise<{ account: AccountRow; key: string; inbox: InboxRow; keyId: string }> {
  const now = base.now();
  const email = input.email.trim().toLowerCase();
  const account: AccountRow = {
    id: newId("acct", now),
    shortId: randomBase32(8),
    name: input.name ?? null,
    email,
    tier: "sandbox",
    status: "active",
    newAccountUntil: now + NEW_ACCOUNT_PERIOD_MS,
    createdAt: now,
    updatedAt: now,
    deletedAt: null,
  };
  const { row: keyRow, key } = await newKeyRow(
    account.id,
    { name: "default", scopes: ["full"], inboxIds: null },
    now,
    opts.hashKey,
  );
  const inbox = newSharedInbox(account, config(base.env).mailDomain, { username: "sandbox" }, now);
  const ctx = forAccount(base, account.id);
  const event = inboxEvent(ctx, "inbox.created", inbox);
  try {
    await commitWithAudit(
      ctx,
      [
        ctx.db.insert(accounts).values(account),
        ctx.db.insert(apiKeys).values(keyRow),
        ctx.db.insert(inboxes).values(inbox),
        event.statement,
      ],
      [
        {
          action: "account.created",
          target: { type: "account", id: account.id },
          metadata: { email, tier: account.tier },
        },
        {
          action: "api_key.created",
          target: { type: "api_key", id: keyRow.id },
          metadata: { name: keyRow.name, prefix: keyRow.prefix, scopes: keyRow.scopes, inbox_ids: null },
        },
        {
          action: "inbox.created",
          target: { type: "inbox", id: inbox.id },
          inboxId: inbox.id,
          metadata: { address: inbox.address, event_id: event.id },
        },
      ],
    );
  } catch (err) {
    if (isUniqueViolation(err, "accounts.email")) {
      throw new Conflict("email_taken", "An account with this email already exists.");
    }
    throw err;
  }
  await publishEvents(ctx.env, [event.id]);
  return { account, key, inbox, keyId: keyRow.id };
}

/** The caller's account. */
export async function getAccount(ctx: ServiceContext): Promise<AccountRow> {
  return getAccountById(ctx.db, ctx.accountId);
}

/** Any account by id (operators, and the caller's own through `getAccount`). */
export async function getAccountById(db: Db, accountId: string): Promise<AccountRow> {
  const row = await db.select().from(accounts).where(eq(accounts.id, accountId)).get();
  if (!row) throw new NotFound("Account");
  return row;
}

/** Updates the caller's account name. */
export async function patchAccount(ctx: ServiceContext, patch: z.infer<typeof AccountPatch>): Promise<AccountRow> {
  const current = await getAccount(ctx);
  const next = { ...current, name: patch.name === undefined ? current.name : patch.name, updatedAt: ctx.now() };
  await commitWithAudit(
    ctx,
    [ctx.db.update(accounts).set({ name: next.name, updatedAt: next.updatedAt }).where(eq(accounts.id, ctx.accountId))],
    [
      {
        action: "account.updated",
        target: { type: "account", id: ctx.accountId },
        metadata: { changes: Object.keys(patch) },
      },
    ],
  );
  return next;
}

/**
 * Closes the account: every key is revoked and every inbox deactivated at once. Data and the
 * audit log stay (the log is append-only); the email is freed for a new registration, and its
 * verified domains are released (`domain.released`) so a new owner can verify them.
 */
export async function closeAccount(ctx: ServiceContext): Promise<AccountRow> {
  const current = await getAccount(ctx);
  const now = ctx.now();
  const next: AccountRow = {
    ...current,
    status: "deleted",
    deletedAt: now,
    updatedAt: now,
    email: `${current.id}@deleted.invalid`,
  };
  await setAccountKeysBlocked(ctx, "revoked", true);
  const releases = await domainReleasesOnClose(ctx);
  await commitWithAudit(
    ctx,
    [
      ...releases.statements,
      ctx.db
        .update(accounts)
        .set({ status: "deleted", deletedAt: now, updatedAt: now, email: next.email })
        .where(eq(accounts.id, ctx.accountId)),
      ctx.db
        .update(apiKeys)
        .set({ revokedAt: now })
        .where(and(eq(apiKeys.accountId, ctx.accountId), isNull(apiKeys.revokedAt))),
      ctx.db
        .update(inboxes)
        .set({ status: "disabled", disabledReason: "deactivated", updatedAt: now })
        .where(eq(inboxes.accountId, ctx.accountId)),
    ],
    [{ action: "account.deleted", target: { type: "account", id: ctx.accountId }, metadata: {} }, ...releases.entries],
  );
  // Again after the commit: a key created while this ran (its insert after the first pass) is
  // found now; key creation re-reads the status after its own insert for the other order.
  await setAccountKeysBlocked(ctx, "revoked", true);
  return next;
}

/**
 * The operators' search, in SQL so it reaches every account and pages like the plain list:
 * email, name or id starting with the text (LIKE is case-insensitive for ASCII in SQLite), or,
 * for text starting with `@`, the start of the email's domain. LIKE's wildcards in the text match themselves.
 */
function accountSearch(q: string): SQL {
  const escaped = q.replace(/[\\%_]/g, (ch) => `\\${ch}`);
  const prefix = (col: SQL | SQLiteColumn) => sql`${col} LIKE ${`${escaped}%`} ESCAPE '\\'`;
  if (q.startsWith("@")) return sql`${accounts.email} LIKE ${`%${escaped}%`} ESCAPE '\\'`;
  return or(prefix(accounts.email), prefix(sql`coalesce(${accounts.name}, '')`), prefix(accounts.id)) as SQL;
}

/**
 * Operators: newest-first page of all accounts. Like reading one account, the look is recorded
 * in the audit log of every account the page shows (`account.admin_listed`, actor admin), so an
 * owner can see that an operator saw their account, whichever route showed it.
 */
export async function listAllAccounts(ctx: BaseContext, page: Page, search?: string): Promise<AccountRow[]> {
  const where: SQL[] = [];
  if (page.before) where.push(lt(accounts.id, page.before));
  const q = search?.trim();
  if (q) where.push(accountSearch(q));
  const rows = await ctx.db
    .select()
    .from(accounts)
    .where(and(...where))
    .orderBy(desc(accounts.id))
    .limit(page.limit + 1)
    .all();
  const shown = rows.slice(0, page.limit);
  const first = shown[0];
  if (first) {
    await commitWithAudit(
      forAccount(ctx, first.id),
      [],
      shown.map((a) => ({
        accountId: a.id,
        action: "account.admin_listed",
        target: { type: "account", id: a.id },
        metadata: { page_size: shown.length },
      })),
    );
  }
  return rows;
}

/** Operators: read one account; the look is recorded in that account's own audit log. */
export async function adminViewAccount(ctx: ServiceContext): Promise<AccountRow> {
  const row = await getAccount(ctx);
  await commitWithAudit(ctx, [], [{ action: "account.admin_viewed", target: { type: "account", id: row.id } }]);
  return row;
}

/** Operators: change tier, status or the new-account window; audited on that account. */
export async function adminPatchAccount(
  ctx: ServiceContext,
  patch: z.infer<typeof AdminAccountPatch>,
): Promise<AccountRow> {
  const current = await getAccount(ctx);
  if (patch.tier !== undefined && !(patch.tier in config(ctx.env).tiers)) {
    throw new ValidationFailed([
      { path: "tier", message: `Unknown tier. Known: ${Object.keys(config(ctx.env).tiers).join(", ")}.` },
    ]);
  }
  if (current.status === "deleted") throw new Conflict("account_deleted", "This account is closed.");
  const now = ctx.now();
  const next: AccountRow = {
    ...current,
    tier: patch.tier ?? current.tier,
    status: patch.status ?? current.status,
    newAccountUntil:
      patch.new_account_until === undefined
        ? current.newAccountUntil
        : patch.new_account_until === null
          ? now
          : Date.parse(patch.new_account_until),
    updatedAt: now,
  };
  const changes: Record<string, { from: unknown; to: unknown }> = {};
  if (next.tier !== current.tier) changes.tier = { from: current.tier, to: next.tier };
  if (next.status !== current.status) changes.status = { from: current.status, to: next.status };
  if (next.newAccountUntil !== current.newAccountUntil) {
    changes.new_account_until = { from: iso(current.newAccountUntil), to: iso(next.newAccountUntil) };
  }
  // Suspension reaches the keys' guard objects before D1 and is lifted after it: fail closed.
  if (changes.status && next.status === "suspended") await setAccountKeysBlocked(ctx, "suspended", true);
  await commitWithAudit(
    ctx,
    [
      ctx.db
        .update(accounts)
        .set({ tier: next.tier, status: next.status, newAccountUntil: next.newAccountUntil, updatedAt: now })
        .where(eq(accounts.id, ctx.accountId)),
    ],
    [{ action: "account.admin_updated", target: { type: "account", id: ctx.accountId }, metadata: { changes } }],
  );
  // Blocked again after the commit: a key inserted after the first pass is caught here (key
  // creation re-reads the status after its insert, which covers the opposite order).
  if (changes.status && next.status === "suspended") await setAccountKeysBlocked(ctx, "suspended", true);
  if (changes.status && next.status === "active") await setAccountKeysBlocked(ctx, "suspended", false);
  // After the commit: a key verified from now on reads the new tier from D1, and the keys cached
  // as verified learn it from their guards.
  if (changes.tier) await setAccountKeysTier(ctx, next.tier);
  return next;
}

/**
 * Operators: issues a key for an account (e.g. its owner lost the first one). The same verb as
 * `POST /v1/api-keys` (same rules, same `api_key.created` audit entry, actor "admin"); only an
 * active account gets one: a suspended account's keys are refused anyway, a deleted one is closed.
 */
export async function adminIssueKey(
  ctx: ServiceContext,
  input: z.infer<typeof CreateKeyInput>,
): Promise<{ row: ApiKeyRow; key: string }> {
  const account = await getAccount(ctx);
  if (account.status !== "active") {
    throw new Conflict(
      "account_not_active",
      `This account is ${account.status}; keys are issued only to active accounts.`,
      {
        status: account.status,
      },
    );
  }
  return createKey(ctx, input);
}

/** Wire shape of an account, with its effective limits. */
export function toAccountWire(row: AccountRow, env: Bindings, now = Date.now()): z.infer<typeof AccountWire> {
  const limits = tierLimits(config(env).tiers, row.tier);
  return {
    id: row.id,
    name: row.name,
    email: row.email,
    tier: row.tier,
    status: row.status,
    short_id: row.shortId,
    created_at: iso(row.createdAt),
    new_account_until: iso(row.newAccountUntil),
    limits: {
      tier: row.tier,
      ...limits,
      new_account_send_limit: { limit: NEW_ACCOUNT_SEND_LIMIT, window_hours: 24, active: row.newAccountUntil > now },
    },
  };
}
