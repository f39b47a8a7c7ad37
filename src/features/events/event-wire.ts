import type { z } from "@hono/zod-openapi";
import type { EventRow } from "../../db/schema";
import { iso } from "../../lib/time";
import type { EVENT_TYPES, EventWire } from "./events.schemas";

/**
 * Wire shape of an event: exactly `{ id, type, created_at, account_id, data }`. A module of its
 * own so webhook attempts can build payloads without importing the events service (which starts
 * those attempts: an import cycle otherwise).
 */
export function toEventWire(row: EventRow): z.infer<typeof EventWire> {
  return {
    id: row.id,
    type: row.type as (typeof EVENT_TYPES)[number],
    created_at: iso(row.createdAt),
    account_id: row.accountId,
    data: row.data,
  };
}
