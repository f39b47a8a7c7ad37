import { waitUntil } from "cloudflare:workers";
import type { GuardState, RateDecision, RateRule } from "../../durable-objects/rate-limiter";
import { keyGuard } from "../../durable-objects/rate-limiter.client";
import type { Bindings } from "../../env";
import { log } from "../../lib/log";

/**
 * The per-key request budget, decided in the isolate: no Durable Object round trip on a request.
 *
 * Each isolate keeps, per key, a snapshot of its guard object (durable-objects/rate-limiter.ts):
 * blocked or not (revocation, suspension), the tier last pushed to it, and how many hits the other
 * isolates served in the window. It counts its own hits exactly and reports them to the guard in
 * the background (waitUntil) once the snapshot is SYNC_AFTER_MS old. A request is served from a
 * snapshot taken (request sent to the guard) less than FRESH_FOR_MS ago; an older one, i.e. a key
 * idle in this isolate, waits for one sync first. So a revocation, suspension or tier change
 * written to the guard at time T is in force in every isolate for every request after
 * T + FRESH_FOR_MS (1.5 s), within the promised 2 s. Changes made in this isolate apply at once
 * (`markStale`). Across isolates the limit is approximate (each may overshoot by what it admits
 * between two syncs, like Cloudflare's own rate-limit binding); within one isolate it is exact.
 */
export const SYNC_AFTER_MS = 500;
export const FRESH_FOR_MS = 1_500;
const WINDOW_MS = 60_000;
const BURST_WINDOW_MS = 1_000;
const STATES_MAX = 10_000;
/** Longest a request waits for its key's guard before reading the key's state from D1 instead. */
const SYNC_WAIT_MS = 1_000;

/** `p`, or a rejection after `ms` (the timer is this request's own, so it always settles). */
function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

interface KeyState {
  /** When the request that produced the snapshot left (epoch ms); 0: never, or marked stale. */
  syncedAt: number;
  snapshot: GuardState;
  /** Hits this isolate admitted in the window (ascending), and those not yet reported. */
  local: number[];
  pending: number[];
  syncing: Promise<void> | null;
  /** Bumped by markStale: a sync that started before the change does not count as fresh. */
  generation: number;
}

const states = new Map<string, KeyState>();
let origin: string | null = null;

/** This isolate's tag in the guard's log (random values are not allowed at module scope). */
function isolateOrigin(): string {
  origin ??= crypto.randomUUID();
  return origin;
}

function stateOf(keyId: string): KeyState {
  let st = states.get(keyId);
  if (!st) {
    if (states.size >= STATES_MAX) states.delete(states.keys().next().value as string);
    st = {
      syncedAt: 0,
      snapshot: { blocked: null, tier: null, others: 0, othersBurst: 0, othersFreeAtMs: null },
      local: [],
      pending: [],
      syncing: null,
      generation: 0,
    };
    states.set(keyId, st);
  }
  return st;
}

/** A change to the key made in this isolate (revoked, suspended, tier): the next request re-syncs. */
export function markStale(keyId: string): void {
  const st = states.get(keyId);
  if (!st) return;
  st.syncedAt = 0;
  st.generation++;
}

function sync(env: Bindings, keyId: string, st: KeyState): Promise<void> {
  if (st.syncing) return st.syncing;
  const sentAt = Date.now();
  const hits = st.pending;
  const generation = st.generation;
  st.pending = [];
  st.syncing = keyGuard(env, keyId)
    .sync(isolateOrigin(), hits, WINDOW_MS, BURST_WINDOW_MS, sentAt)
    .then((snapshot: GuardState) => {
      st.snapshot = snapshot;
      // A markStale during the call wins: the change it stands for may postdate this snapshot.
      if (st.generation === generation) st.syncedAt = sentAt;
    })
    .catch((err: unknown) => {
      // Report them next time, but only those still inside the window: an outage must not grow this.
      const since = Date.now() - WINDOW_MS;
      st.pending = [...hits, ...st.pending].filter((at) => at > since);
      throw err;
    })
    .finally(() => {
      st.syncing = null;
    });
  return st.syncing;
}

export interface GuardOutcome {
  blocked: string | null;
  /** The tier the guard knows (a change since the key was verified), or null. */
  tier: string | null;
  decision: RateDecision;
}

/**
 * One request of a key: waits for its guard only when this isolate's snapshot is too old (or
 * missing), otherwise decides locally and syncs in the background. `ruleFor` builds the rule
 * from the tier the guard reports (null: the verified row's tier).
 */
export async function guardRequest(
  env: Bindings,
  keyId: string,
  ruleFor: (tier: string | null) => RateRule,
  now: number,
  /** The key's state from D1, used when the guard cannot be reached (the API stays up). */
  fallback: () => Promise<{ blocked: string | null; tier: string | null }>,
): Promise<GuardOutcome> {
  const st = stateOf(keyId);
  if (st.syncedAt > 0 && st.syncing === null && now - st.syncedAt >= SYNC_AFTER_MS) {
    waitUntil(
      sync(env, keyId, st).catch((err) => log.warn("key guard sync failed", { key_id: keyId, error: String(err) })),
    );
  }
  if (now - st.syncedAt >= FRESH_FOR_MS) {
    // Another request's sync may never settle (that request was cancelled): wait for it at most
    // SYNC_WAIT_MS, then forget it and take this request's own path.
    if (st.syncing) {
      const shared = st.syncing;
      await within(
        shared.catch(() => undefined),
        SYNC_WAIT_MS,
      ).catch(() => {
        if (st.syncing === shared) st.syncing = null;
      });
    }
    if (now - st.syncedAt >= FRESH_FOR_MS) {
      try {
        await within(sync(env, keyId, st), SYNC_WAIT_MS);
      } catch (err) {
        log.warn("key guard unreachable; key state read from D1", { key_id: keyId, error: String(err) });
        st.snapshot = { ...st.snapshot, ...(await fallback()) };
      }
    }
  }
  const { snapshot } = st;
  const rule = ruleFor(snapshot.tier);
  if (snapshot.blocked !== null) {
    return {
      blocked: snapshot.blocked,
      tier: snapshot.tier,
      decision: {
        allowed: false,
        blocked: snapshot.blocked,
        limit: rule.limit,
        remaining: 0,
        resetAtMs: now,
        retryAfterMs: 0,
      },
    };
  }
  return { blocked: null, tier: snapshot.tier, decision: decideLocally(st, rule, now) };
}

function decideLocally(st: KeyState, rule: RateRule, now: number): RateDecision {
  const windowStart = now - rule.windowMs;
  let expired = 0;
  while (expired < st.local.length && (st.local[expired] as number) <= windowStart) expired++;
  if (expired > 0) st.local.splice(0, expired);
  // Other isolates' hits are a snapshot at most FRESH_FOR_MS old: counted until they expire.
  const snap = st.snapshot;
  const others = snap.othersFreeAtMs !== null && snap.othersFreeAtMs <= now ? 0 : snap.others;
  const othersBurst = now - st.syncedAt < BURST_WINDOW_MS ? snap.othersBurst : 0;
  const used = st.local.length + others;

  let retryAfterMs = 0;
  if (used >= rule.limit) {
    // The slot frees when enough of the window's hits expire: ours are known exactly, the others'
    // oldest expiry is what the guard reported.
    const needed = used - rule.limit;
    const ours = st.local[needed];
    const candidates = [ours === undefined ? null : ours + rule.windowMs, snap.othersFreeAtMs].filter(
      (t): t is number => t !== null,
    );
    retryAfterMs = Math.max(1, Math.min(...candidates, now + rule.windowMs) - now);
  } else if (rule.burst !== undefined && rule.burstWindowMs !== undefined) {
    // The log is ascending: the burst window's hits are its tail (no scan of the whole minute).
    const burstStart = now - rule.burstWindowMs;
    let first = st.local.length;
    while (first > 0 && (st.local[first - 1] as number) > burstStart) first--;
    const inBurst = st.local.length - first;
    if (inBurst + othersBurst >= rule.burst) {
      const oldest = st.local[first + Math.max(0, inBurst + othersBurst - rule.burst)] ?? now;
      retryAfterMs = Math.max(1, oldest + rule.burstWindowMs - now);
    }
  }
  const allowed = retryAfterMs <= 0;
  if (allowed) {
    st.local.push(now);
    st.pending.push(now);
  }
  const total = st.local.length + others;
  const newest = st.local.at(-1);
  return {
    allowed,
    blocked: null,
    limit: rule.limit,
    remaining: Math.max(0, rule.limit - total),
    resetAtMs: newest === undefined ? now : newest + rule.windowMs,
    retryAfterMs,
  };
}
