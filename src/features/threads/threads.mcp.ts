import { z } from "@hono/zod-openapi";
import { defineTool } from "../../mcp/define-tool";
import { InboxParam } from "../messages/messages.schemas";
import { listedForAgent, QUARANTINE_LABEL } from "../messages/messages.service";
import { GetThreadQuery, ListThreadsQuery, ThreadParams } from "./threads.schemas";
import {
  getThread,
  listThreads,
  threadPageOf,
  toThreadPage,
  toThreadWire,
  toThreadWithMessagesWire,
} from "./threads.service";

/** A thread's labels as an agent sees them: without `quarantine` (which says held mail is there). */
function withoutHeldLabel<T extends { labels: string[] }>(thread: T): T {
  return { ...thread, labels: thread.labels.filter((l) => l !== QUARANTINE_LABEL) };
}

/** MCP tools of the threads feature: same schemas and service verbs as its routes. */
export const threadTools = [
  defineTool({
    name: "list_threads",
    title: "List an inbox's threads",
    description:
      "Lists an inbox's conversations, most recently active first: subject, participants, message_count, last_message_at, labels. Filter by label. A thread whose every message is quarantined is left out until one is released. limit 1–100 (default 20); pass next_cursor back as cursor.",
    scope: "read",
    input: ListThreadsQuery.safeExtend({ inbox_id: InboxParam.shape.inbox_id }),
    annotations: { readOnlyHint: true, openWorldHint: false },
    run: async ({ ctx }, q) => {
      // Agents never see held mail, whatever label they filter by: not the threads made of it,
      // not which visible threads hold some (the `quarantine` label), not its senders (held mail
      // is not counted into a thread until released).
      if (q.label === QUARANTINE_LABEL) return { items: [], next_cursor: null };
      const rows = await listThreads(ctx, q.inbox_id, { label: q.label, withQuarantined: false }, toThreadPage(q));
      const { items, nextCursor } = threadPageOf(rows, q.limit);
      return { items: items.map((t) => withoutHeldLabel(toThreadWire(t))), next_cursor: nextCursor };
    },
    summary: (page) =>
      `${page.items.length} thread(s)${page.next_cursor ? " (more: pass next_cursor as cursor)" : ""}${page.items
        .map((t) => `\n- ${t.id} (${t.message_count} messages): "${t.subject ?? ""}"`)
        .join("")}`,
  }),
  defineTool({
    name: "get_thread",
    title: "Get a thread",
    description:
      'Returns a conversation with its messages, oldest first (at most 200; messages_truncated tells when there are more: page with list_messages and thread_id), each with its screening verdict and a preview of its text instead of the bodies: get_message returns one whole (as safe_text). include: "body" adds each body as safe_text (raw: true gives the original bodies, untrusted). Quarantined messages are left out until released.',
    scope: "read",
    input: ThreadParams.safeExtend({
      include: GetThreadQuery.shape.include,
      raw: z.boolean().default(false).describe("true: the original body_text / body_html instead of safe_text"),
    }),
    annotations: { readOnlyHint: true, openWorldHint: false },
    run: async ({ ctx }, { inbox_id, thread_id, include, raw }) => {
      // Quarantined messages are left out (a thread of nothing else is a 404, like get_message's).
      const found = await getThread(ctx, inbox_id, thread_id, include === "body");
      return {
        ...withoutHeldLabel(toThreadWithMessagesWire(found)),
        messages: found.messages.map((m) => listedForAgent(m, raw)),
      };
    },
    summary: (t) => `Thread ${t.id} "${t.subject ?? ""}" with ${t.messages.length} message(s).`,
  }),
];
