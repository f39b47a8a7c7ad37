import { and, eq, isNull } from "drizzle-orm";
import type { Db } from "../../db/client";
import { type AccountRow, type ApiKeyRow, accounts, apiKeys } from "../../db/schema";
import { verifySecret } from "../../lib/argon2";
import { sha256Hex } from "../../lib/crypto";

/** `mb_` + at least 32 base62 characters. */
export const KEY_PATTERN = /^mb_[0-9A-Za-z]{32,128}$/;
export const KEY_PREFIX_LENGTH = 8;
const CACHE_TTL_MS = 60_000;
const CACHE_MAX = 10_000;

export interface VerifiedKey {
  key: ApiKeyRow;
  account: AccountRow;
}

/**
 * Verified keys, by SHA-256 of the presented key, for one minute per isolate: Argon2id costs
 * ~100 ms of CPU, so it runs at most once per key per isolate per minute. Only positive results
 * are cached. Revocation, suspension and tier changes do not wait for the cache to expire: they
 * are written first to the key's guard object (durable-objects/rate-limiter.ts), which every
 * isolate keeps in sync with in the background and at most 1.5 s behind (key-guard.ts).
 */
const verified = new Map<string, VerifiedKey & { expiresAtMs: number }>();
/** Concurrent first requests with the same key share one verification. */
const inflight = new Map<string, Promise<KeyLookup>>();

/** Per-isolate counters, reported by the operator stats endpoint and the benchmark. */
export const authStats = { argon2Verifications: 0, cacheHits: 0, startedAt: 0 };

export type KeyLookup =
  | ({ ok: true } & VerifiedKey)
  | { ok: false; reason: "malformed" | "unknown_prefix" | "mismatch" };

/** Cheap first step: is this key already verified in this isolate? */
export async function cachedKey(token: string, now: number): Promise<{ digest: string; hit: VerifiedKey | null }> {
  if (authStats.startedAt === 0) authStats.startedAt = now; // Date.now() is 0 at module load in workerd
  const digest = await sha256Hex(token);
  const hit = verified.get(digest);
  if (hit && hit.expiresAtMs > now) {
    authStats.cacheHits++;
    return { digest, hit };
  }
  if (hit) verified.delete(digest);
  return { digest, hit: null };
}

/** Full verification: candidates by the 8-character prefix, then Argon2id on each. */
export async function verifyKey(
  db: Db,
  token: string,
  digest: string,
  now: number,
  /** Runs only when hashing is about to happen (it may throw to refuse first). */
  beforeHash: () => Promise<void>,
): Promise<KeyLookup> {
  const pending = inflight.get(digest);
  if (pending) {
    // Share the verification already running for this key, but never wait on another
    // request for long: if it was cancelled, its promise may never settle.
    const shared = await Promise.race([pending, scheduler.wait(INFLIGHT_WAIT_MS).then(() => null)]);
    if (shared) return shared;
  }
  const run = verifyUncached(db, token, digest, now, beforeHash).finally(() => {
    if (inflight.get(digest) === run) inflight.delete(digest);
  });
  inflight.set(digest, run);
  return run;
}

const INFLIGHT_WAIT_MS = 2_000;

async function verifyUncached(
  db: Db,
  token: string,
  digest: string,
  now: number,
  beforeHash: () => Promise<void>,
): Promise<KeyLookup> {
  if (!KEY_PATTERN.test(token)) return { ok: false, reason: "malformed" };
  const candidates = await db
    .select({ key: apiKeys, account: accounts })
    .from(apiKeys)
    .innerJoin(accounts, eq(accounts.id, apiKeys.accountId))
    .where(and(eq(apiKeys.prefix, token.slice(0, KEY_PREFIX_LENGTH)), isNull(apiKeys.revokedAt)))
    .all();
  if (candidates.length === 0) return { ok: false, reason: "unknown_prefix" };
  await beforeHash();
  for (const candidate of candidates) {
    authStats.argon2Verifications++;
    if (await verifySecret(token, candidate.key.keyHash)) {
      // A cached row of a non-active account proves only that the hash matched: its status is
      // read from D1 on every hit (refreshStatus), never trusted from the cache. Only an active
      // account's row is served from memory, with the guard object carrying any change since.
      if (verified.size >= CACHE_MAX) verified.delete(verified.keys().next().value as string);
      verified.set(digest, { ...candidate, expiresAtMs: now + CACHE_TTL_MS });
      return { ok: true, ...candidate };
    }
  }
  return { ok: false, reason: "mismatch" };
}

/**
 * A cache hit of a key whose account was not active when it was verified: the account's status
 * now, from D1 (no hashing). An account reactivated since is served again at once; a suspended
 * or closed one is refused on every request, however often the key is presented.
 */
export async function refreshStatus(db: Db, digest: string, hit: VerifiedKey): Promise<VerifiedKey> {
  if (hit.account.status === "active") return hit;
  const account = await db.select().from(accounts).where(eq(accounts.id, hit.account.id)).get();
  if (!account) return hit;
  const entry = verified.get(digest);
  if (entry) entry.account = account;
  return { key: hit.key, account };
}

/** Forgets a cached verification (a key found blocked). */
export function forgetVerified(digest: string): void {
  verified.delete(digest);
}

/** Records use at most once a minute per key, off the response path. */
export async function touchKey(db: Db, key: ApiKeyRow, now: number): Promise<void> {
  if (key.lastUsedAt !== null && now - key.lastUsedAt < 60_000) return;
  key.lastUsedAt = now; // the cached row too, so the next requests skip the write
  await db.update(apiKeys).set({ lastUsedAt: now }).where(eq(apiKeys.id, key.id)).run();
}
export type { AccountRow, ApiKeyRow } from "../../db/schema";

/** The key's state in D1 (when its guard object cannot be reached): blocked or not, and the tier. */
export async function keyStateFromDb(db: Db, keyId: string): Promise<{ blocked: string | null; tier: string | null }> {
  const row = await db
    .select({ revokedAt: apiKeys.revokedAt, status: accounts.status, tier: accounts.tier })
    .from(apiKeys)
    .innerJoin(accounts, eq(accounts.id, apiKeys.accountId))
    .where(eq(apiKeys.id, keyId))
    .get();
  if (!row || row.revokedAt !== null) return { blocked: "revoked", tier: null };
  if (row.status === "suspended") return { blocked: "suspended", tier: row.tier };
  return { blocked: row.status === "active" ? null : "revoked", tier: row.tier };
}
