import type { BatchItem } from "drizzle-orm/batch";
import { events } from "../../db/schema";
import type { Bindings } from "../../env";
import type { ServiceContext } from "../../lib/context";
import { newId } from "../../lib/ids";

export type EventType =
  | "message.received"
  | "message.sent"
  | "message.delivered"
  | "message.bounced"
  | "message.complained"
  | "message.blocked"
  | "inbox.created"
  | "inbox.disabled"
  | "inbox.enabled"
  | "domain.verified"
  | "webhook.test";

export interface EventRefs {
  inboxId?: string | null;
  threadId?: string | null;
  messageId?: string | null;
}

/**
 * The insert of one event, to go in the same `db.batch` as the change it reports, so an event
 * exists exactly when its change does. Delivery (webhooks, long-poll) reads the log later.
 */
export function eventStatement(
  ctx: ServiceContext,
  type: EventType,
  refs: EventRefs,
  data: Record<string, unknown>,
): { id: string; statement: BatchItem<"sqlite"> } {
  const id = newId("evt", ctx.now());
  const statement = ctx.db.insert(events).values({
    id,
    accountId: ctx.accountId,
    type,
    inboxId: refs.inboxId ?? null,
    threadId: refs.threadId ?? null,
    messageId: refs.messageId ?? null,
    data,
    createdAt: ctx.now(),
  });
  return { id, statement };
}

/**
 * Hands committed events to delivery (webhooks). Call it after the `db.batch` that inserted
 * them has committed. A stub until the webhooks feature lands; its signature is the contract.
 */
export async function publishEvents(_env: Bindings, _eventIds: string[]): Promise<void> {}
