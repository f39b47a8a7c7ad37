import { OpenAPIHono, z } from "@hono/zod-openapi";
import { and, eq } from "drizzle-orm";
import type { Context } from "hono";
import { createDb, type Db } from "../../db/client";
import { messages } from "../../db/schema";
import type { AppEnv } from "../../env";
import { fieldIssues } from "../../http/errors";
import { jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import type { ServiceContext } from "../../lib/context";
import { AppError, ValidationFailed } from "../../lib/errors";
import { newId } from "../../lib/ids";
import type { ReportFinding } from "../../mail/dsn-arf";
import {
  checkHeaders,
  claimRelaySignature,
  inboundSecret,
  readCapped,
  releaseRelaySignature,
  verifySignature,
} from "../inbound/relay-auth";
import { recordFindings } from "./bounces.service";

/** A relay's notifications are small; a batch of 100 fits well under this. */
const MAX_EVENTS_BYTES = 256 * 1024;
/** What a signature is bound to (the raw endpoint binds its signatures to a recipient address). */
const EVENTS_BINDING = "relay-events@events.invalid";

export const RelayEvent = z
  .object({
    type: z.enum(["bounce", "complaint"]),
    message_id: z
      .string()
      .regex(/^msg_[0-9a-z]{26}$/)
      .optional()
      .openapi({
        description:
          "Our message id (also the local part of the Message-ID we sent, and the `+msg_…` tag of the bounce address)",
      }),
    rfc_message_id: z.string().min(3).max(998).optional().openapi({
      description: "The Message-ID header of the mail, when `message_id` is not known",
      example: "<msg_01jd2x0000000000000000000@mail.example.com>",
    }),
    recipient: z
      .string()
      .trim()
      .toLowerCase()
      .min(3)
      .max(320)
      .regex(/^[^@\s]+@[^@\s]+$/, "Must be an email address"),
    bounce_type: z.enum(["hard", "soft"]).default("hard").openapi({ description: "Bounces only; hard is permanent" }),
    status_code: z
      .string()
      .regex(/^[245]\.\d{1,3}\.\d{1,3}$/)
      .optional()
      .openapi({ description: "Enhanced status code (RFC 3463)", example: "5.1.1" }),
    diagnostic: z.string().max(1000).optional(),
    feedback_type: z
      .string()
      .max(64)
      .optional()
      .openapi({ description: "Complaints: ARF feedback type", example: "abuse" }),
  })
  .refine((e) => e.message_id !== undefined || e.rfc_message_id !== undefined, {
    message: "Either message_id or rfc_message_id is required",
    path: ["message_id"],
  })
  .openapi("RelayEvent");

export const RelayEventsBody = z.object({ events: z.array(RelayEvent).min(1).max(100) }).openapi("RelayEvents");

const RelayEventsResult = z
  .object({
    received: z.number().int(),
    results: z.array(
      z.object({
        index: z.number().int(),
        event_id: z.string().openapi({ description: "`rev_…`: recorded as the carrier of the finding" }),
        message_id: z.string().nullable(),
        linked: z.boolean().openapi({ description: "False when no message of ours matches (the event is ignored)" }),
        counted: z.boolean().openapi({
          description: "False for a repeat of something already recorded, or a recipient the message never went to",
        }),
      }),
    ),
  })
  .openapi("RelayEventsResult");

/** `POST /webhooks/inbound/events`: bounce and complaint notifications from a relay, HMAC-authenticated. */
export const relayEventRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });
relayEventRoutes.openAPIRegistry.register("RelayEvents", RelayEventsBody);

relayEventRoutes.openapi(
  jsonRoute({
    request: {
      // Documentation only (a $ref, not a zod schema, so no validator reads the body first): the
      // handler checks the signature over the exact bytes, then validates them with RelayEventsBody.
      body: {
        required: true,
        content: { "application/json": { schema: { $ref: "#/components/schemas/RelayEvents" } } },
      },
    },
    method: "post",
    path: "/webhooks/inbound/events",
    tags: ["Inbound"],
    summary: "Bounce and complaint notifications from a relay",
    description:
      'Authenticated like `/webhooks/inbound/raw`: `X-Mailbot-Timestamp` (unix seconds, within 5 minutes) and `X-Mailbot-Signature: sha256=<hex HMAC-SHA256(INBOUND_SECRET, timestamp + "." + body)>`. A signature is accepted once: a replayed request is a 401 `invalid_signature` (a relay retrying signs again with a fresh timestamp; events already recorded count once). Each event goes through the same path as a DSN or ARF report: the message is marked (`bounced`, `complained_at`), `message.bounced` / `message.complained` is emitted and audited, the recipient is suppressed (hard bounces, complaints) and the inbox\'s reputation counters move. A repeat of an event already recorded counts once.',
    data: RelayEventsResult,
    status: 202,
    security: "none",
    errors: {
      401: "`invalid_signature` (also a signature already used) or `timestamp_out_of_range`",
      413: "`payload_too_large`: over 256 KiB",
      422: "`validation_error`: the body is not a valid batch of events (`details` lists each bad field)",
      503: "`inbound_not_configured`: the deployment has no INBOUND_SECRET",
    },
  }),
  async (c) => {
    const secret = inboundSecret(c.env);
    const timestamp = c.req.header("X-Mailbot-Timestamp");
    const signature = c.req.header("X-Mailbot-Signature");
    checkHeaders(timestamp, signature);
    const body = await readCapped(c.req.raw.body, MAX_EVENTS_BYTES).catch((err: unknown) => {
      if (err instanceof AppError && err.status === 413) {
        throw new AppError(413, "payload_too_large", `Request body exceeds ${MAX_EVENTS_BYTES} bytes.`);
      }
      throw err;
    });
    await verifySignature(secret, timestamp as string, signature as string, body);
    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder().decode(body));
    } catch {
      throw new ValidationFailed([{ path: "", message: "The body is not JSON" }], "The body must be a JSON object.");
    }
    const parsed = RelayEventsBody.safeParse(json);
    if (!parsed.success) throw new ValidationFailed(fieldIssues(parsed.error));
    const db = createDb(c.env.DB);
    const now = Date.now();
    // A signature counts once: a replay of the same request is refused (401 invalid_signature).
    const claim = await claimRelaySignature(db, signature as string, EVENTS_BINDING, now, { once: true });
    try {
      return c.json({ data: await recordRelayEvents(c, db, parsed.data.events, now) }, 202);
    } catch (err) {
      // Nothing (or only some idempotent part) was recorded: the relay may retry as it was.
      await releaseRelaySignature(db, claim);
      throw err;
    }
  },
);

/** Records each relay event through the one findings path; `linked`/`counted` per event. */
async function recordRelayEvents(
  c: Context<AppEnv>,
  db: Db,
  events: z.infer<typeof RelayEventsBody>["events"],
  now: number,
): Promise<z.infer<typeof RelayEventsResult>> {
  const results: z.infer<typeof RelayEventsResult>["results"] = [];
  for (const [index, e] of events.entries()) {
    const eventId = newId("rev", now);
    // Our Message-IDs are `<msg_…@domain>`: the relay may only know the header.
    const messageId = e.message_id ?? /^<?(msg_[0-9a-z]{26})@/.exec(e.rfc_message_id ?? "")?.[1] ?? null;
    // The relay is trusted by the deployment's secret, not by an account: the message names the account.
    const owner = messageId
      ? await db
          .select({ accountId: messages.accountId })
          .from(messages)
          .where(and(eq(messages.id, messageId), eq(messages.direction, "outbound")))
          .get()
      : undefined;
    if (!owner || !messageId) {
      results.push({ index, event_id: eventId, message_id: null, linked: false, counted: false });
      continue;
    }
    const ctx: ServiceContext = {
      accountId: owner.accountId,
      actor: { type: "system", id: null },
      requestId: c.get("requestId"),
      db,
      env: c.env,
      now: () => now,
    };
    const finding: ReportFinding = {
      kind: e.type,
      bounceType: e.type === "bounce" ? e.bounce_type : null,
      recipient: e.recipient,
      statusCode: e.status_code ?? null,
      diagnostic: e.diagnostic ?? null,
      feedbackType: e.type === "complaint" ? (e.feedback_type ?? "abuse") : null,
    };
    const { linked, writes } = await recordFindings(ctx, messageId, [finding], {
      source: "relay",
      carrierId: eventId,
    });
    results.push({ index, event_id: eventId, message_id: messageId, linked, counted: writes.signals.length > 0 });
  }
  return { received: results.length, results };
}
