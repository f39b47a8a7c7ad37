import type { Bindings } from "../env";
import { delayedStub } from "../lib/bench";
import type { InboxCounter, ReputationFigures } from "./inbox-counter";

/** The one client that names the InboxCounter namespace. */
export function inboxCounter(env: Bindings, inboxId: string): DurableObjectStub<InboxCounter> {
  return delayedStub(env, env.INBOX_COUNTER.getByName(inboxId));
}

/** The account-wide counter is an InboxCounter of its own, named apart from every inbox id. */
export const ACCOUNT_COUNTER_PREFIX = "account:";

export function accountCounterName(accountId: string): string {
  return `${ACCOUNT_COUNTER_PREFIX}${accountId}`;
}

/** The counter of an account's rates over all its inboxes (same rules, same window). */
export function accountCounter(env: Bindings, accountId: string): DurableObjectStub<InboxCounter> {
  return delayedStub(env, env.INBOX_COUNTER.getByName(accountCounterName(accountId)));
}

/**
 * Warnings are advice, not decisions (the counter alone decides a disable), so each isolate keeps
 * an inbox's figures for a few seconds for the warning headers: a busy inbox's requests then skip
 * the counter round trip, which under load cost reads as much as their own work. Inputs applied in
 * this isolate drop the entry at once; another isolate's inputs show within SNAPSHOT_TTL_MS.
 */
const SNAPSHOT_TTL_MS = 5_000;
const SNAPSHOT_CACHE_MAX = 10_000;
const snapshots = new Map<string, { accountId: string; at: number; figures: ReputationFigures | null }>();

/** The counter's figures for an inbox of `accountId`, at most SNAPSHOT_TTL_MS old. */
export async function cachedSnapshot(
  env: Bindings,
  accountId: string,
  inboxId: string,
  now: number,
): Promise<ReputationFigures | null> {
  const hit = snapshots.get(inboxId);
  if (hit && hit.accountId === accountId && now >= hit.at && now - hit.at < SNAPSHOT_TTL_MS) return hit.figures;
  const figures = await inboxCounter(env, inboxId).snapshot(now, accountId);
  if (snapshots.size >= SNAPSHOT_CACHE_MAX) snapshots.clear();
  snapshots.set(inboxId, { accountId, at: now, figures });
  return figures;
}

/** Drops an inbox's cached figures (an input was just applied in this isolate). */
export function forgetSnapshot(inboxId: string): void {
  snapshots.delete(inboxId);
}

/** Tells the counter the inbox was re-enabled: the next input over a threshold disables it again. */
export async function notifyInboxEnabled(env: Bindings, inboxId: string, now: number): Promise<void> {
  forgetSnapshot(inboxId);
  await inboxCounter(env, inboxId).enable(now);
}
