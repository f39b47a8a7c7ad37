import { createDb, type D1Handle, type Db } from "../db/client";
import type { Bindings } from "../env";

export type ActorType = "api_key" | "admin" | "system" | "mcp" | "dashboard";

export interface Actor {
  type: ActorType;
  id: string | null;
}

/** The actor of work nobody asked for in a request: queue jobs, sweeps, the email trigger. */
export const SYSTEM_ACTOR: Actor = Object.freeze({ type: "system", id: null }) as Actor;

/**
 * What every caller hands a service verb before it knows the account: who acts, the request or
 * job id, the database, the bindings and the one clock (tests freeze it by passing `now`).
 */
export interface BaseContext {
  actor: Actor;
  requestId: string | null;
  db: Db;
  env: Bindings;
  now: () => number;
}

/** Everything a service verb needs; adapters (routes, email, queues, MCP) build one per call. */
export interface ServiceContext extends BaseContext {
  accountId: string;
  /** The key's inbox restriction, when the caller is a restricted key. */
  inboxIds?: string[] | null;
}

/**
 * A context for one call; the only place a database handle is made for a service. `d1` is the
 * request's D1 session (read replication, http/d1-session.ts); without one, the binding itself.
 */
export function createContext(
  env: Bindings,
  opts: { actor: Actor; requestId: string | null; now?: () => number; d1?: D1Handle },
): BaseContext {
  return {
    actor: opts.actor,
    requestId: opts.requestId,
    db: createDb(opts.d1 ?? env.DB),
    env,
    now: opts.now ?? Date.now,
  };
}

/** The context of background work (queue jobs, sweeps, the email trigger): the system actor. */
export function systemContext(
  env: Bindings,
  opts: { requestId?: string | null; now?: () => number } = {},
): BaseContext {
  return createContext(env, { actor: SYSTEM_ACTOR, requestId: opts.requestId ?? null, now: opts.now });
}

/** The same caller, clock and database, acting on one account. */
export function forAccount(ctx: BaseContext, accountId: string, inboxIds?: string[] | null): ServiceContext {
  return { ...ctx, accountId, ...(inboxIds !== undefined ? { inboxIds } : {}) };
}

/** A fixed clock, for a job that was handed its time (tests, sweeps). */
export function clockAt(now: number): () => number {
  return () => now;
}
