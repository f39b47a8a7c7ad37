import { and, eq, lt } from "drizzle-orm";
import type { Db } from "../../db/client";
import { idempotencyKeys } from "../../db/schema";
import type { BaseContext } from "../../lib/context";
import { newId } from "../../lib/ids";

const STALE_PENDING_MS = 60_000;

export type Reservation =
  | { state: "new"; id: string }
  | { state: "replay"; statusCode: number; sealed: string }
  | { state: "in_progress" }
  | { state: "mismatch" };

/** Claims an idempotency record, or reports what an earlier request with the same key left. */
export async function reserve(
  db: Db,
  args: {
    lookup: string;
    accountId: string | null;
    method: string;
    path: string;
    requestHash: string;
    now: number;
    ttlMs: number;
  },
): Promise<Reservation> {
  // An expired record no longer binds the key.
  await db
    .delete(idempotencyKeys)
    .where(and(eq(idempotencyKeys.lookup, args.lookup), lt(idempotencyKeys.expiresAt, args.now)))
    .run();
  const id = newId("idem", args.now);
  const inserted = await db
    .insert(idempotencyKeys)
    .values({
      id,
      lookup: args.lookup,
      accountId: args.accountId,
      method: args.method,
      path: args.path,
      requestHash: args.requestHash,
      state: "pending",
      createdAt: args.now,
      expiresAt: args.now + args.ttlMs,
    })
    .onConflictDoNothing()
    .returning({ id: idempotencyKeys.id })
    .all();
  if (inserted.length > 0) return { state: "new", id };
  // A claim left pending by a request that died (CPU limit, eviction) is taken over after a minute.
  const reclaimed = await db
    .update(idempotencyKeys)
    .set({ createdAt: args.now })
    .where(
      and(
        eq(idempotencyKeys.lookup, args.lookup),
        eq(idempotencyKeys.state, "pending"),
        eq(idempotencyKeys.requestHash, args.requestHash),
        lt(idempotencyKeys.createdAt, args.now - STALE_PENDING_MS),
      ),
    )
    .returning({ id: idempotencyKeys.id })
    .all();
  if (reclaimed[0]) return { state: "new", id: reclaimed[0].id };
  const existing = await db.select().from(idempotencyKeys).where(eq(idempotencyKeys.lookup, args.lookup)).get();
  if (!existing) return { state: "in_progress" };
  if (existing.requestHash !== args.requestHash) return { state: "mismatch" };
  if (existing.state !== "done" || existing.responseSealed === null || existing.statusCode === null) {
    return { state: "in_progress" };
  }
  return { state: "replay", statusCode: existing.statusCode, sealed: existing.responseSealed };
}

/** Stores the first response (sealed) so later requests with the key replay it. */
export async function complete(db: Db, id: string, statusCode: number, sealed: string): Promise<void> {
  await db
    .update(idempotencyKeys)
    .set({ state: "done", statusCode, responseSealed: sealed })
    .where(eq(idempotencyKeys.id, id))
    .run();
}

/** Releases a claim whose request failed on our side, so the client may retry with the same key. */
export async function release(db: Db, id: string): Promise<void> {
  await db.delete(idempotencyKeys).where(eq(idempotencyKeys.id, id)).run();
}

/** Deletes expired records (the scheduled sweep). */
export async function purgeExpired(ctx: BaseContext): Promise<number> {
  const now = ctx.now();
  const gone = await ctx.db
    .delete(idempotencyKeys)
    .where(lt(idempotencyKeys.expiresAt, now))
    .returning({ id: idempotencyKeys.id })
    .all();
  return gone.length;
}
