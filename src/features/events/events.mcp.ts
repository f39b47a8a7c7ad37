import { defineTool, IDEMPOTENCY_NOTE, IdempotencyKeyArg } from "../../mcp/define-tool";
import { replayEvent, toReplayWire } from "../webhooks/webhooks.service";
import { EventIdParam, ReplayEventInput } from "./events.schemas";

/** MCP tools of the events feature: same schemas and service verbs as its routes. */
export const eventTools = [
  defineTool({
    name: "replay_event",
    title: "Replay a webhook event",
    description: `Re-delivers a stored event (same event id) to every enabled webhook endpoint it matches, to one endpoint (webhook_id), or to target_url (https, public addresses only; signed with the endpoint's secret). Fails with validation_error when no endpoint matches. ${IDEMPOTENCY_NOTE}`,
    scope: "manage",
    input: ReplayEventInput.safeExtend({ event_id: EventIdParam.shape.event_id, idempotency_key: IdempotencyKeyArg }),
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: true },
    idempotent: { path: (a) => `/v1/events/${a.event_id}/replay`, pathParams: ["event_id"], status: 202 },
    run: async ({ ctx }, { event_id, idempotency_key: _, ...input }) =>
      toReplayWire(await replayEvent(ctx, event_id, input)),
    summary: (r) => `Replaying ${r.event_id} to ${r.target_url ?? `${r.webhook_ids.length} webhook endpoint(s)`}.`,
  }),
];
