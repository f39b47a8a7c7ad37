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

/**
 * Verified keys, by SHA-256 of the presented key, for one minute per isolate: Argon2id costs
 * ~100 ms of CPU, so it runs at most once per key per isolate per minute. Only positive results
 * are cached, and the key row is still read on every request, so a revoked key fails at once.
 */
const verified = new Map<string, { keyId: string; expiresAtMs: number }>();

/** Per-isolate counters, reported by the operator stats endpoint and the benchmark. */
export const authStats = { argon2Verifications: 0, cacheHits: 0, startedAt: Date.now() };

export type KeyLookup =
  | { ok: true; key: ApiKeyRow; account: AccountRow; argon2: boolean }
  | { ok: false; reason: "malformed" | "unknown_prefix" | "mismatch" | "revoked" };

/** Cheap first step: is this key already verified in this isolate? Returns its id. */
export async function cachedKeyId(token: string, now: number): Promise<{ digest: string; keyId: string | null }> {
  const digest = await sha256Hex(token);
  const hit = verified.get(digest);
  if (hit && hit.expiresAtMs > now) {
    authStats.cacheHits++;
    return { digest, keyId: hit.keyId };
  }
  if (hit) verified.delete(digest);
  return { digest, keyId: null };
}

/** Loads a key (with its account) by id, refusing revoked keys. */
export async function loadKeyById(db: Db, keyId: string): Promise<{ key: ApiKeyRow; account: AccountRow } | null> {
  const row = await db
    .select({ key: apiKeys, account: accounts })
    .from(apiKeys)
    .innerJoin(accounts, eq(accounts.id, apiKeys.accountId))
    .where(eq(apiKeys.id, keyId))
    .get();
  return row && row.key.revokedAt === null ? row : null;
}

/** Full verification: candidates by the 8-character prefix, then Argon2id on each. */
export async function verifyKey(db: Db, token: string, digest: string, now: number): Promise<KeyLookup> {
  if (!KEY_PATTERN.test(token)) return { ok: false, reason: "malformed" };
  const candidates = await db
    .select({ key: apiKeys, account: accounts })
    .from(apiKeys)
    .innerJoin(accounts, eq(accounts.id, apiKeys.accountId))
    .where(and(eq(apiKeys.prefix, token.slice(0, KEY_PREFIX_LENGTH)), isNull(apiKeys.revokedAt)))
    .all();
  if (candidates.length === 0) return { ok: false, reason: "unknown_prefix" };
  for (const candidate of candidates) {
    authStats.argon2Verifications++;
    if (await verifySecret(token, candidate.key.keyHash)) {
      if (verified.size >= CACHE_MAX) verified.delete(verified.keys().next().value as string);
      verified.set(digest, { keyId: candidate.key.id, expiresAtMs: now + CACHE_TTL_MS });
      return { ok: true, ...candidate, argon2: true };
    }
  }
  return { ok: false, reason: "mismatch" };
}

/** Forgets a cached verification (used when a cached key turns out revoked). */
export function forgetVerified(digest: string): void {
  verified.delete(digest);
}

/** Records use at most once a minute per key, off the response path. */
export async function touchKey(db: Db, key: ApiKeyRow, now: number): Promise<void> {
  if (key.lastUsedAt !== null && now - key.lastUsedAt < 60_000) return;
  await db.update(apiKeys).set({ lastUsedAt: now }).where(eq(apiKeys.id, key.id)).run();
}
