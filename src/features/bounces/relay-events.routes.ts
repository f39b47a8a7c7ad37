import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../http/app-env";
import { clientAddress } from "../../http/auth";
import { requestContext } from "../../http/context";
import { fieldIssues } from "../../http/errors";
import { jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { MessageTooLarge, PayloadTooLarge, ValidationFailed } from "../../lib/errors";
import {
  checkHeaders,
  claimRelaySignature,
  concatChunks,
  inboundSecret,
  readVerified,
  releaseRelaySignature,
  throttleRelayFailures,
} from "../inbound/relay-auth";
import { RelayEventsBody, RelayEventsResult } from "./bounces.schemas";
import { recordRelayEvents } from "./bounces.service";

/** A relay's notifications are small; a batch of 100 fits well under this. */
const MAX_EVENTS_BYTES = 256 * 1024;
/** What a signature is bound to (the raw endpoint binds its signatures to a recipient address). */
const EVENTS_BINDING = "relay-events@events.invalid";

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
      401: "`invalid_signature` (also a signature already used), `malformed_signature` or `timestamp_out_of_range`",
      413: "`payload_too_large`: over 256 KiB",
      429: "`too_many_failed_attempts`: too many bad signatures from this client this minute",
      422: "`validation_error`: the body is not a valid batch of events (`details` lists each bad field)",
      503: "`inbound_not_configured`: the deployment has no INBOUND_SECRET",
    },
  }),
  async (c) => {
    const secret = inboundSecret(c.env);
    const timestamp = c.req.header("X-Mailbot-Timestamp");
    const signature = checkHeaders(timestamp, c.req.header("X-Mailbot-Signature"));
    const client = clientAddress(c);
    await throttleRelayFailures(c.env, client, false);
    const chunks = await readVerified(
      c.req.raw.body,
      MAX_EVENTS_BYTES,
      secret,
      `${timestamp as string}.`,
      signature.hex,
    ).catch(async (err: unknown) => {
      if (err instanceof MessageTooLarge) throw new PayloadTooLarge(MAX_EVENTS_BYTES);
      if ((err as { code?: string }).code === "invalid_signature") await throttleRelayFailures(c.env, client, true);
      throw err;
    });
    const body = concatChunks(chunks);
    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder().decode(body));
    } catch {
      throw new ValidationFailed([{ path: "", message: "The body is not JSON" }], "The body must be a JSON object.");
    }
    const parsed = RelayEventsBody.safeParse(json);
    if (!parsed.success) throw new ValidationFailed(fieldIssues(parsed.error));
    const ctx = requestContext(c);
    // A signature counts once: a replay of the same request is refused (401 invalid_signature).
    const claim = await claimRelaySignature(ctx, signature.normalized, EVENTS_BINDING, { once: true });
    try {
      return c.json({ data: await recordRelayEvents(ctx, parsed.data.events) }, 202);
    } catch (err) {
      // Nothing (or only some idempotent part) was recorded: the relay may retry as it was.
      await releaseRelaySignature(ctx, claim);
      throw err;
    }
  },
);
