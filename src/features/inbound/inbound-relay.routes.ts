import { OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../../http/app-env";
import { clientAddress } from "../../http/auth";
import { requestContext } from "../../http/context";
import { jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { inboundTooLarge, MAX_INBOUND_BYTES, receiveMail } from "./inbound.service";
import {
  checkHeaders,
  claimRelaySignature,
  concatChunks,
  inboundSecret,
  readVerified,
  refuseEmpty,
  signedPrefix,
  throttleRelayFailures,
} from "./relay-auth";

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
        'Body: the raw message bytes (any content type, not empty). Headers: `X-Mailbot-Timestamp` (unix seconds, within 5 minutes) and `X-Mailbot-Signature`, either v2 `v2=<hex HMAC-SHA256(INBOUND_SECRET, timestamp + "." + to + "." + from + "." + body)>` (`to` and `from` the decoded query values, `from` empty when absent; one message relayed to several recipients is signed once per recipient) or v1 `sha256=<hex HMAC-SHA256(INBOUND_SECRET, timestamp + "." + body)>` (one recipient per signature: a v1 signature already used for one `to` is refused for another). The HMAC is computed while the body streams in; a client that sent 10 bad signatures within a minute gets 429 `too_many_failed_attempts` before its body is read. A message whose Message-ID is already stored in the inbox with different content is stored too, labelled `message_id_collision`; the same message again is a duplicate (nothing stored twice). Authentication-Results are believed only from the topmost header, and only when its authserv-id is in `INBOUND_RELAY_AUTHSERV_IDS` (none by default).',
      data: RelayResult,
      status: 202,
      security: "none",
      errors: {
        400: "`empty_message`: the body is empty",
        401: "`invalid_signature` (missing or wrong signature, or a v1 signature already used for another `to`), `malformed_signature` (a header present but not of the documented form) or `timestamp_out_of_range` (over 5 minutes of skew)",
        404: "`unknown_recipient`: no active inbox at `to` (unknown, deactivated or disabled)",
        413: "`message_too_large`: over 25 MiB",
        429: "`too_many_failed_attempts`: too many bad signatures from this client this minute (`Retry-After`)",
        503: "`inbound_not_configured`: the deployment has no INBOUND_SECRET",
      },
    }),
  },
  async (c) => {
    const secret = inboundSecret(c.env);
    const timestamp = c.req.header("X-Mailbot-Timestamp");
    // Cheap refusals first: no body is read for a request that cannot be valid.
    const signature = checkHeaders(timestamp, c.req.header("X-Mailbot-Signature"), { v2: true });
    const declared = Number(c.req.header("Content-Length") ?? "0");
    if (declared > MAX_INBOUND_BYTES) throw inboundTooLarge(declared);
    const query = c.req.valid("query");
    const client = clientAddress(c);
    await throttleRelayFailures(c.env, client, false);
    const prefix = signedPrefix(signature, timestamp as string, query.to, query.from ?? "");
    const chunks = await readVerified(c.req.raw.body, MAX_INBOUND_BYTES, secret, prefix, signature.hex).catch(
      async (err: unknown) => {
        if ((err as { code?: string }).code === "invalid_signature") await throttleRelayFailures(c.env, client, true);
        throw err;
      },
    );
    refuseEmpty(chunks);
    const body = concatChunks(chunks);
    chunks.length = 0;
    const ctx = requestContext(c);
    await claimRelaySignature(ctx, signature.normalized, query.to);
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
