import { z } from "@hono/zod-openapi";
import { PageQuery } from "../../lib/pagination";
import { Timestamp } from "../../lib/wire";
import { IdOf, InboxParam, IncludeBody, Label, MessageListItemWire } from "../messages/messages.schemas";

export const ThreadParams = z.object({
  inbox_id: InboxParam.shape.inbox_id,
  thread_id: IdOf("thr", "thr_01jd2x0000000000000000000").openapi({ param: { name: "thread_id", in: "path" } }),
});

export const GetThreadQuery = z.object({
  include: IncludeBody,
  label: z.enum(["quarantine"]).optional().openapi({
    description:
      "*(new)* `quarantine`: the thread with its quarantined messages only (otherwise they are left out, and a thread of nothing else is a 404).",
  }),
});

export const ListThreadsQuery = PageQuery.extend({ label: Label.optional() });

export const ThreadWire = z
  .object({
    id: z.string().openapi({ example: "thr_01jd2x0000000000000000000" }),
    inbox_id: z.string(),
    subject: z.string().nullable(),
    participants: z.array(z.string()),
    message_count: z.number().int(),
    last_message_at: Timestamp,
    labels: z.array(z.string()),
    created_at: Timestamp,
    updated_at: Timestamp,
  })
  .openapi("Thread");

export const ThreadWithMessagesWire = ThreadWire.extend({
  messages: z.array(MessageListItemWire).openapi({
    description: "Oldest first (at most 200), each with `preview` instead of its bodies (`?include=body` adds them).",
  }),
  messages_truncated: z.boolean().openapi({
    description:
      "True when the thread has more messages than it carries (more than 200, or, with `?include=body`, past about 1 MiB of bodies): page through `GET …/messages?thread_id=`.",
  }),
}).openapi("ThreadWithMessages");
