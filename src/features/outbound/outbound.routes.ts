import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../http/app-env";
import { requireScope } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { idempotent } from "../../http/idempotency";
import { jsonBody, jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { InboxParam, MessageWire } from "../messages/messages.schemas";
import { toMessageWire } from "../messages/messages.service";
import { ForwardInput, MessageIdParam, ReplyToMessageInput, SendMessageInput } from "./outbound.schemas";
import { forwardMessage, replyToMessage, sendMessage } from "./outbound.service";

const tags = ["Sending"];

const SEND_ERRORS = {
  403: "`inbox_disabled`: the inbox is disabled (or its counter has decided a disable for its rates); `account_reputation`: the account's bounce or complaint rate over all its inboxes is above a threshold; `insufficient_scope`: the key lacks `send`",
  413: "`message_too_large`: over 5 MiB once encoded (or `payload_too_large`: request over 8 MiB)",
  422: "`validation_error`, `too_many_recipients` (over 50), or `send_blocked` with `details.reason`",
  429: "`send_limit_exceeded` (new accounts: 10 per rolling 24 h; tier limits per inbox), with `Retry-After`",
} as const;

const ACCEPTED =
  "Answers 202 with the message (`status: queued`) as soon as it is stored; the queue consumer sends it and the status follows to `sent` or `failed` (event `message.sent`). Bodies and subjects are yours; mail you read back from others is untrusted content.";

export const outboundRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

outboundRoutes.use("/inboxes/:inbox_id/messages", idempotent);
outboundRoutes.use("/messages/:message_id/reply", idempotent);
outboundRoutes.use("/messages/:message_id/forward", idempotent);

outboundRoutes.openapi(
  jsonRoute({
    request: { params: InboxParam, body: jsonBody(SendMessageInput) },
    method: "post",
    path: "/inboxes/{inbox_id}/messages",
    tags,
    summary: "Send a message",
    description: ACCEPTED,
    data: MessageWire,
    status: 202,
    idempotent: true,
    errors: SEND_ERRORS,
  }),
  async (c) => {
    requireScope(c, "send");
    const row = await sendMessage(serviceContext(c), c.req.valid("param").inbox_id, c.req.valid("json"));
    return c.json({ data: toMessageWire(row) }, 202);
  },
);

outboundRoutes.openapi(
  jsonRoute({
    request: { params: MessageIdParam, body: jsonBody(ReplyToMessageInput) },
    method: "post",
    path: "/messages/{message_id}/reply",
    tags,
    summary: "Reply to a message (In-Reply-To, References and one `Re:` are set for you)",
    description: `Replies from the message's inbox to its sender (Reply-To when given); \`reply_all\` adds every other recipient except the inbox itself. ${ACCEPTED}`,
    data: MessageWire,
    status: 202,
    idempotent: true,
    errors: SEND_ERRORS,
  }),
  async (c) => {
    requireScope(c, "send");
    const row = await replyToMessage(serviceContext(c), c.req.valid("param").message_id, c.req.valid("json"));
    return c.json({ data: toMessageWire(row) }, 202);
  },
);

outboundRoutes.openapi(
  jsonRoute({
    request: { params: MessageIdParam, body: jsonBody(ForwardInput) },
    method: "post",
    path: "/messages/{message_id}/forward",
    tags,
    summary: "Forward a message, with its attachments, to new recipients",
    description: `The original appears below an optional note, inline (text and HTML), with its attachments; the forward stays in the original's thread. ${ACCEPTED}`,
    data: MessageWire,
    status: 202,
    idempotent: true,
    errors: SEND_ERRORS,
  }),
  async (c) => {
    requireScope(c, "send");
    const row = await forwardMessage(serviceContext(c), c.req.valid("param").message_id, c.req.valid("json"));
    return c.json({ data: toMessageWire(row) }, 202);
  },
);
