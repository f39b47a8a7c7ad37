import { and, eq, gt, inArray, isNull, lt, or } from "drizzle-orm";
import { type AccountRow, type ApiKeyRow, accounts, apiKeys, dashboardSessions } from "../db/schema";
import type { BaseContext } from "../lib/context";
import { sha256Hex, toHex } from "../lib/crypto";

/** A dashboard session lasts 12 hours from sign-in, whatever happens in the browser. */
export const SESSION_TTL_MS = 12 * 60 * 60 * 1000;

export type DashboardSession =
  | { kind: "account"; id: string; expiresAt: number; account: AccountRow; key: ApiKeyRow }
  | { kind: "operator"; id: string; expiresAt: number };

function randomToken(): string {
  return toHex(crypto.getRandomValues(new Uint8Array(32)));
}

const encoder = new TextEncoder();

/**
 * What the row keeps of an operator session's token: an HMAC of it keyed by ADMIN_TOKEN (not a
 * plain SHA-256). The session is then only found while the secret it was opened with is the one
 * configured: rotating a leaked ADMIN_TOKEN ends every operator session at once, with no column
 * to compare and no sweep. Null when ADMIN_TOKEN is unset (operator access disabled).
 */
async function operatorTokenMac(env: BaseContext["env"], token: string): Promise<string | null> {
  const secret = env.ADMIN_TOKEN;
  if (!secret) return null;
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return toHex(await crypto.subtle.sign("HMAC", key, encoder.encode(`dashboard-operator-session:${token}`)));
}

/**
 * Opens a session and returns its token (for the cookie only). The row keeps the token's
 * SHA-256, so a copy of the table cannot be replayed as cookies. Expired rows are cleared here,
 * on the rare path, so the table does not grow without a sweep.
 */
export async function openSession(
  ctx: BaseContext,
  who: { kind: "account"; accountId: string; keyId: string } | { kind: "operator" },
): Promise<{ token: string; expiresAt: number }> {
  const now = ctx.now();
  const token = randomToken();
  const expiresAt = now + SESSION_TTL_MS;
  const tokenHash = who.kind === "operator" ? await operatorTokenMac(ctx.env, token) : await sha256Hex(token);
  // requireAdmin has just accepted ADMIN_TOKEN, so it is set; refuse rather than store a bare hash.
  if (!tokenHash) throw new Error("ADMIN_TOKEN is not set");
  await ctx.db.batch([
    ctx.db.delete(dashboardSessions).where(lt(dashboardSessions.expiresAt, now)),
    ctx.db.insert(dashboardSessions).values({
      id: `dss_${randomToken().slice(0, 26)}`,
      tokenHash,
      kind: who.kind,
      accountId: who.kind === "account" ? who.accountId : null,
      keyId: who.kind === "account" ? who.keyId : null,
      createdAt: now,
      expiresAt,
    }),
  ]);
  return { token, expiresAt };
}

/**
 * The live session behind a cookie, or null. An account session is only as good as its key:
 * a revoked key or a suspended account ends it on the next request (read from D1 each time,
 * so there is no cache to go stale). An operator session is only as good as the ADMIN_TOKEN it
 * was opened with: its row is keyed by an HMAC under that secret, so after a rotation (or with
 * the secret unset) no row matches.
 */
export async function findSession(ctx: BaseContext, token: string): Promise<DashboardSession | null> {
  if (!/^[0-9a-f]{64}$/.test(token)) return null;
  const now = ctx.now();
  const mac = await operatorTokenMac(ctx.env, token);
  const accountMatch = and(
    eq(dashboardSessions.tokenHash, await sha256Hex(token)),
    eq(dashboardSessions.kind, "account"),
  );
  const row = await ctx.db
    .select()
    .from(dashboardSessions)
    .where(
      and(
        mac
          ? or(accountMatch, and(eq(dashboardSessions.tokenHash, mac), eq(dashboardSessions.kind, "operator")))
          : accountMatch,
        gt(dashboardSessions.expiresAt, now),
      ),
    )
    .get();
  if (!row) return null;
  if (row.kind === "operator") return { kind: "operator", id: row.id, expiresAt: row.expiresAt };
  if (!row.keyId || !row.accountId) return null;
  const found = await ctx.db
    .select({ key: apiKeys, account: accounts })
    .from(apiKeys)
    .innerJoin(accounts, eq(accounts.id, apiKeys.accountId))
    .where(and(eq(apiKeys.id, row.keyId), eq(apiKeys.accountId, row.accountId), isNull(apiKeys.revokedAt)))
    .get();
  if (found?.account.status !== "active") return null;
  return { kind: "account", id: row.id, expiresAt: row.expiresAt, ...found };
}

/** Sign-out: the row goes, so the old cookie is refused from now on. */
export async function endSession(ctx: BaseContext, token: string): Promise<void> {
  const mac = await operatorTokenMac(ctx.env, token);
  const hashes = [await sha256Hex(token), ...(mac ? [mac] : [])];
  await ctx.db.delete(dashboardSessions).where(inArray(dashboardSessions.tokenHash, hashes)).run();
}
