import type { z } from "@hono/zod-openapi";
import { and, desc, eq, isNull, lt, type SQL } from "drizzle-orm";
import { type ApiKeyRow, accounts, apiKeys, inboxes } from "../../db/schema";
import { inList } from "../../db/sql";
import { disconnectStreams } from "../../durable-objects/event-hub.client";
import { keyGuard } from "../../durable-objects/rate-limiter.client";
import { hashSecret } from "../../lib/argon2";
import type { ServiceContext } from "../../lib/context";
import { Conflict, Forbidden, NotFound, ValidationFailed } from "../../lib/errors";
import { newId, randomBase62 } from "../../lib/ids";
import type { Page } from "../../lib/pagination";
import { iso } from "../../lib/time";
import { commitWithAudit } from "../audit/audit.service";
import type { ApiKeyWire, CreateKeyInput } from "./api-keys.schemas";
import { KEY_PREFIX_LENGTH } from "./key-auth";
import { markStale } from "./key-guard";

/** A new secret key, `mb_` + 40 base62 characters (~238 bits). */
export function generateApiKey(): string {
  return `mb_${randomBase62(40)}`;
}

/** How a key's secret is hashed for storage: Argon2id (`hashSecret`); tests pass a cheaper cost. */
export type KeyHasher = (secret: string) => Promise<string>;

/** Builds a key row (hashing the secret with Argon2id); the caller writes it. */
export async function newKeyRow(
  accountId: string,
  input: { name: string; scopes: string[]; inboxIds: string[] | null },
  now: number,
  hashKey: KeyHasher = hashSecret,
): Promise<{ row: ApiKeyRow; key: string }> {
  const key = generateApiKey();
  const row: ApiKeyRow = {
    id: newId("key", now),
    accountId,
    name: input.name,
    prefix: key.slice(0, KEY_PREFIX_LENGTH),
    keyHash: await hashKey(key),
    scopes: [...new Set(input.scopes)],
    inboxIds: input.inboxIds,
    createdAt: now,
    lastUsedAt: null,
    revokedAt: null,
  };
  return { row, key };
}

/** Creates a key; restricted keys may only name inboxes of this account. */
export async function createKey(
  ctx: ServiceContext,
  input: z.infer<typeof CreateKeyInput>,
  opts: { hashKey?: KeyHasher } = {},
): Promise<{ row: ApiKeyRow; key: string }> {
  const inboxIds = input.inbox_ids ? [...new Set(input.inbox_ids)] : null;
  if (inboxIds) {
    const owned = await ctx.db
      .select({ id: inboxes.id })
      .from(inboxes)
      .where(and(eq(inboxes.accountId, ctx.accountId), inList(inboxes.id, inboxIds)))
      .all();
    const ownedIds = new Set(owned.map((r) => r.id));
    const missing = inboxIds.filter((id) => !ownedIds.has(id));
    if (missing.length > 0) {
      throw new ValidationFailed(missing.map((id) => ({ path: "inbox_ids", message: `Unknown inbox ${id}.` })));
    }
  }
  const created = await newKeyRow(
    ctx.accountId,
    { name: input.name, scopes: input.scopes, inboxIds },
    ctx.now(),
    opts.hashKey,
  );
  // After the ~100 ms of hashing, right before the insert: the account must still be active.
  await assertAccountActive(ctx);
  await commitWithAudit(
    ctx,
    [ctx.db.insert(apiKeys).values(created.row)],
    [
      {
        action: "api_key.created",
        target: { type: "api_key", id: created.row.id },
        metadata: {
          name: created.row.name,
          prefix: created.row.prefix,
          scopes: created.row.scopes,
          inbox_ids: inboxIds,
        },
      },
    ],
  );
  // A suspension that committed between the check above and the insert may have blocked the
  // account's keys before this one existed: look again now that it does. Either this read sees
  // the new status (and blocks the key here), or the suspension commits later and its blocking
  // pass after the commit (accounts.service) finds this key. Either way it cannot slip through.
  const status = await accountStatus(ctx);
  if (status !== "active") {
    await keyGuard(ctx.env, created.row.id).block(status === "suspended" ? "suspended" : "revoked");
    markStale(created.row.id);
    throw notActive(status);
  }
  return created;
}

async function accountStatus(ctx: ServiceContext): Promise<string> {
  const row = await ctx.db
    .select({ status: accounts.status })
    .from(accounts)
    .where(eq(accounts.id, ctx.accountId))
    .get();
  return row?.status ?? "deleted";
}

function notActive(status: string) {
  return status === "suspended"
    ? new Forbidden("account_suspended", "This account is suspended.")
    : new Conflict("account_not_active", `This account is ${status}; keys are issued only to active accounts.`, {
        status,
      });
}

/** Keys are created only for an active account (D1 is the authority, not the caller's cached row). */
async function assertAccountActive(ctx: ServiceContext): Promise<void> {
  const status = await accountStatus(ctx);
  if (status !== "active") throw notActive(status);
}

/** Newest-first page of the account's keys (revoked ones included, marked). */
export async function listKeys(ctx: ServiceContext, page: Page): Promise<ApiKeyRow[]> {
  const where: SQL[] = [eq(apiKeys.accountId, ctx.accountId)];
  if (page.before) where.push(lt(apiKeys.id, page.before));
  return ctx.db
    .select()
    .from(apiKeys)
    .where(and(...where))
    .orderBy(desc(apiKeys.id))
    .limit(page.limit + 1)
    .all();
}

/** Revokes a key; effective on the very next request that uses it. */
export async function revokeKey(ctx: ServiceContext, keyId: string): Promise<ApiKeyRow> {
  const row = await ctx.db
    .select()
    .from(apiKeys)
    .where(and(eq(apiKeys.id, keyId), eq(apiKeys.accountId, ctx.accountId)))
    .get();
  if (!row) throw new NotFound("API key");
  if (row.revokedAt !== null) return row;
  const revokedAt = ctx.now();
  // The guard first: isolates that cached this key as verified refuse it from now on. If the
  // D1 write below fails, the key stays refused (fail closed) and a retry completes the record.
  await keyGuard(ctx.env, keyId).block("revoked");
  markStale(keyId); // this isolate at once; the others within 1.5 s (key-guard.ts)
  await commitWithAudit(
    ctx,
    [
      ctx.db
        .update(apiKeys)
        .set({ revokedAt })
        .where(and(eq(apiKeys.id, keyId), eq(apiKeys.accountId, ctx.accountId), isNull(apiKeys.revokedAt))),
    ],
    [
      {
        action: "api_key.revoked",
        target: { type: "api_key", id: keyId },
        metadata: { prefix: row.prefix, name: row.name },
      },
    ],
  );
  await disconnectStreams(ctx.env, ctx.accountId, keyId, "api_key_revoked");
  return { ...row, revokedAt };
}

/** Wire shape of a key: never the key, never its hash. */
export function toKeyWire(row: ApiKeyRow): z.infer<typeof ApiKeyWire> {
  return {
    id: row.id,
    name: row.name,
    prefix: row.prefix,
    scopes: row.scopes,
    inbox_ids: row.inboxIds ?? null,
    created_at: iso(row.createdAt),
    last_used_at: iso(row.lastUsedAt),
    revoked_at: iso(row.revokedAt),
  };
}

/** Places (or lifts) a block on every live key of the account, in their guard objects. */
export async function setAccountKeysBlocked(
  ctx: ServiceContext,
  reason: "revoked" | "suspended",
  blocked: boolean,
): Promise<void> {
  const keys = await ctx.db
    .select({ id: apiKeys.id })
    .from(apiKeys)
    .where(and(eq(apiKeys.accountId, ctx.accountId), isNull(apiKeys.revokedAt)))
    .all();
  await Promise.all(
    keys.map(async (k) => {
      await (blocked ? keyGuard(ctx.env, k.id).block(reason) : keyGuard(ctx.env, k.id).unblock(reason));
      markStale(k.id);
    }),
  );
  if (blocked)
    await disconnectStreams(
      ctx.env,
      ctx.accountId,
      null,
      reason === "suspended" ? "account_suspended" : "api_key_revoked",
    );
}

/**
 * Pushes the account's new tier to every live key's guard: isolates that cached a key apply the
 * new limits at their next sync (within 1.5 s), this one at once.
 */
export async function setAccountKeysTier(ctx: ServiceContext, tier: string): Promise<void> {
  const keys = await ctx.db
    .select({ id: apiKeys.id })
    .from(apiKeys)
    .where(and(eq(apiKeys.accountId, ctx.accountId), isNull(apiKeys.revokedAt)))
    .all();
  await Promise.all(
    keys.map(async (k) => {
      await keyGuard(ctx.env, k.id).setTier(tier);
      markStale(k.id);
    }),
  );
}
