import { defineTool } from "../../mcp/define-tool";
import { InboxParam } from "../messages/messages.schemas";
import { GetThreadQuery, ListThreadsQuery, ThreadParams } from "./threads.schemas";
import {
  getThread,
  listThreads,
  threadPageOf,
  toThreadPage,
  toThreadWire,
  toThreadWithMessagesWire,
} from "./threads.service";

/** MCP tools of the threads feature: same schemas and service verbs as its routes. */
export const threadTools = [
  defineTool({
    name: "list_threads",
    title: "List an inbox's threads",
    description:
      "Lists an inbox's conversations, most recently active first: subject, participants, message_count, last_message_at, labels. Filter by label. limit 1–100 (default 20); pass next_cursor back as cursor.",
    scope: "read",
    input: ListThreadsQuery.safeExtend({ inbox_id: InboxParam.shape.inbox_id }),
    annotations: { readOnlyHint: true, openWorldHint: false },
    run: async ({ ctx }, q) => {
      const rows = await listThreads(ctx, q.inbox_id, { label: q.label }, toThreadPage(q));
      const { items, nextCursor } = threadPageOf(rows, q.limit);
      return { items: items.map(toThreadWire), next_cursor: nextCursor };
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
      'Returns a conversation with its messages, oldest first (at most 200; messages_truncated tells when there are more: page with list_messages and thread_id), each with a preview of its text instead of the bodies: get_message returns one whole, or pass include: "body".',
    scope: "read",
    input: ThreadParams.safeExtend(GetThreadQuery.shape),
    annotations: { readOnlyHint: true, openWorldHint: false },
    run: async ({ ctx }, { inbox_id, thread_id, include }) =>
      toThreadWithMessagesWire(await getThread(ctx, inbox_id, thread_id, include === "body")),
    summary: (t) => `Thread ${t.id} "${t.subject ?? ""}" with ${t.messages.length} message(s).`,
  }),
];
