import { env } from "cloudflare:workers";
import { expect, vi } from "vitest";
import main from "../../src/index";
import {
  type BaseContext,
  clockAt,
  createContext,
  forAccount,
  type ServiceContext,
  SYSTEM_ACTOR,
  systemContext,
} from "../../src/lib/context";
import { ADMIN_TOKEN, call } from "./api";

/** The Worker's handlers as the runtime sees them (they may ignore trailing arguments). */
export const worker = main as unknown as Required<ExportedHandler<Cloudflare.Env>>;

/** A unique address at example.org: `{local}{8 random characters}@example.org`. */
export const unique = (local: string) => `${local}${crypto.randomUUID().slice(0, 8)}@example.org`;

/** `COUNT(*) AS n` of a query, 0 when it finds nothing. */
export async function countRows(sql: string, ...binds: unknown[]): Promise<number> {
  return (
    (
      await env.DB.prepare(sql)
        .bind(...binds)
        .first<{ n: number }>()
    )?.n ?? 0
  );
}

/** One message row as D1 holds it (snake_case columns), or null. */
export async function messageRow(id: string) {
  return env.DB.prepare("SELECT * FROM messages WHERE id = ?").bind(id).first<Record<string, unknown>>();
}

/** Waits for the queue consumer (run by miniflare) to bring a message to a final status; returns its row. */
export async function settledMessage(id: string, statuses = ["sent", "failed", "blocked", "bounced"]) {
  await vi.waitFor(
    async () => {
      const r = await messageRow(id);
      expect(statuses).toContain(r?.status);
    },
    { timeout: 10_000, interval: 50 },
  );
  return (await messageRow(id)) as Record<string, unknown>;
}

/** Waits until the account has no webhook delivery left to make (so none outlives the test's fakes). */
export async function webhooksSettled(accountId: string) {
  await vi.waitFor(
    async () => {
      const n = await countRows(
        "SELECT COUNT(*) AS n FROM webhook_dispatches WHERE account_id = ? AND status = 'pending'",
        accountId,
      );
      expect(n).toBe(0);
    },
    { timeout: 10_000, interval: 50 },
  );
}

export interface AuditRowRead {
  action: string;
  actor_type: string;
  actor_id: string | null;
  target_id: string | null;
  inbox_id: string | null;
  // biome-ignore lint/suspicious/noExplicitAny: metadata is inspected field by field
  metadata: any;
}

/** Audit entries in log order, filtered by account, action and/or target; metadata parsed. */
export async function auditEntries(filter: {
  accountId?: string;
  action?: string;
  targetId?: string;
}): Promise<AuditRowRead[]> {
  const where: string[] = [];
  const binds: string[] = [];
  if (filter.accountId) where.push("account_id = ?") && binds.push(filter.accountId);
  if (filter.action) where.push("action = ?") && binds.push(filter.action);
  if (filter.targetId) where.push("target_id = ?") && binds.push(filter.targetId);
  const rows = await env.DB.prepare(
    `SELECT * FROM audit_log ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY seq`,
  )
    .bind(...binds)
    .all<AuditRowRead & { metadata: string }>();
  return rows.results.map((r) => ({ ...r, metadata: JSON.parse(r.metadata) }));
}

/** The actions of an account's audit log, in order. */
export async function auditActions(accountId: string): Promise<string[]> {
  return (await auditEntries({ accountId })).map((r) => r.action);
}

/** An account's events of one type, in commit order; data parsed. */
export async function eventsOf(accountId: string, type: string) {
  const rows = await env.DB.prepare("SELECT * FROM events WHERE account_id = ? AND type = ? ORDER BY seq")
    .bind(accountId, type)
    .all<{ id: string; data: string; message_id: string | null }>();
  return rows.results.map((r) => ({ ...r, data: JSON.parse(r.data) }));
}

/** Lifts the new-account send limit, for tests that are not about it. */
export async function liftLimit(accountId: string) {
  const res = await call("PATCH", `/v1/admin/accounts/${accountId}`, {
    key: ADMIN_TOKEN,
    body: { new_account_until: null },
  });
  expect(res.status, res.text).toBe(200);
}

/**
 * A service context for calling verbs directly, as the system (jobs, consumers) unless told
 * otherwise. `unqueued` drops what the verb would put on the outbound queue, so the test alone
 * decides when the consumer runs.
 */
export function serviceContext(
  accountId: string,
  opts: {
    actor?: ServiceContext["actor"];
    now?: () => number;
    unqueued?: boolean;
    /** Bindings that differ from the test configuration (ENVIRONMENT, OUTBOUND_TRANSPORT …). */
    vars?: Partial<Cloudflare.Env>;
  } = {},
): ServiceContext {
  const queue = opts.unqueued ? { OUTBOUND_QUEUE: { send: async () => {} } as unknown as Queue } : {};
  const bindings = opts.vars || opts.unqueued ? { ...env, ...opts.vars, ...queue } : env;
  return forAccount(
    createContext(bindings, { actor: opts.actor ?? SYSTEM_ACTOR, requestId: null, now: opts.now }),
    accountId,
  );
}

/** The context a queue job or sweep gets (the system actor), optionally at a fixed time. */
export function jobContext(opts: { at?: number } = {}): BaseContext {
  return systemContext(env, { now: opts.at === undefined ? undefined : clockAt(opts.at) });
}

/** How many messages an inbox holds, either direction. */
export async function countMessages(inboxId: string): Promise<number> {
  return countRows("SELECT COUNT(*) AS n FROM messages WHERE inbox_id = ?", inboxId);
}
