import { OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../../http/app-env";
import { requestContext } from "../../http/context";
import { jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { inboundTooLarge, MAX_INBOUND_BYTES, receiveMail } from "./inbound.service";
import { checkHeaders, claimRelaySignature, inboundSecret, readCapped, verifySignature } from "./relay-auth";

const RelayQuery = z.object({
  to: z.string().trim().min(3).max(320).openapi({ example: "support--k3x9m2@mail.example.com" }),
  from: z
    .string()
    .trim()
    .max(320)
    .optional()
    .openapi({ description: "Envelope sender (MAIL FROM); empty for bounces." }),
});

const RelayResult = z
  .object({
    message_id: z.string(),
    inbox_id: z.string(),
    duplicate: z
      .boolean()
      .openapi({ description: "True when this exact mail was already stored (nothing stored twice)." }),
  })
  .openapi("InboundRelayResult");

/** `POST /webhooks/inbound/raw`: mail relayed by another MTA, authenticated by an HMAC of the body. */
export const inboundRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

inboundRoutes.openapi(
  {
    ...jsonRoute({
      request: {
        query: RelayQuery,
        // Documentation only: the handler reads the bytes itself (any content type, up to 25 MiB).
        body: {
          required: true,
          content: { "message/rfc822": { schema: z.string().openapi({ type: "string", format: "binary" }) } },
        },
      },
      method: "post",
      path: "/webhooks/inbound/raw",
      tags: ["Inbound"],
      summary: "Deliver a raw RFC 822 message relayed by another MTA",
      description:
        'Body: the raw message bytes (any content type). Headers: `X-Mailbot-Timestamp` (unix seconds, within 5 minutes) and `X-Mailbot-Signature: sha256=<hex HMAC-SHA256(INBOUND_SECRET, timestamp + "." + body)>`.',
      data: RelayResult,
      status: 202,
      security: "none",
      errors: {
        401: "`invalid_signature` (missing, malformed or wrong signature, or one already used for another `to`) or `timestamp_out_of_range` (over 5 minutes of skew)",
        404: "`unknown_recipient`: no active inbox at `to` (unknown, deactivated or disabled)",
        413: "`message_too_large`: over 25 MiB",
        503: "`inbound_not_configured`: the deployment has no INBOUND_SECRET",
      },
    }),
  },
  async (c) => {
    const secret = inboundSecret(c.env);
    const timestamp = c.req.header("X-Mailbot-Timestamp");
    const signature = c.req.header("X-Mailbot-Signature");
    // Cheap refusals first: no body is read for a request that cannot be valid.
    checkHeaders(timestamp, signature);
    const declared = Number(c.req.header("Content-Length") ?? "0");
    if (declared > MAX_INBOUND_BYTES) throw inboundTooLarge(declared);
    const body = await readCapped(c.req.raw.body, MAX_INBOUND_BYTES);
    await verifySignature(secret, timestamp as string, signature as string, body);
    const query = c.req.valid("query");
    const ctx = requestContext(c);
    await claimRelaySignature(ctx, signature as string, query.to);
    const result = await receiveMail(ctx, {
      readRaw: async () => body,
      envelopeFrom: query.from || null,
      envelopeTo: query.to,
      via: "inbound_webhook",
      requestId: c.get("requestId"),
    });
    return c.json(
      { data: { message_id: result.messageId, inbox_id: result.inboxId, duplicate: result.outcome === "duplicate" } },
      202,
    );
  },
);
