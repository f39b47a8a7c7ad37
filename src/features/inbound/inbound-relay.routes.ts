import { OpenAPIHono, z } from "@hono/zod-openapi";
import { createDb } from "../../db/client";
import type { AppEnv, Bindings } from "../../env";
import { jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { safeEqual, toHex } from "../../lib/crypto";
import { AppError, Unauthorized } from "../../lib/errors";
import { claimRelaySignature, MAX_INBOUND_BYTES, MessageTooLarge, receiveMail } from "./inbound.service";

/** Signatures older or newer than this are refused (replay window). */
const MAX_SKEW_SECONDS = 300;

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
    if (declared > MAX_INBOUND_BYTES) throw new MessageTooLarge(declared);
    const body = await readCapped(c.req.raw.body, MAX_INBOUND_BYTES);
    await verifySignature(secret, timestamp as string, signature as string, body);
    const query = c.req.valid("query");
    await claimRelaySignature(createDb(c.env.DB), signature as string, query.to, Date.now());
    const result = await receiveMail(c.env, {
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

/** Reads a request body, refusing it (413) as soon as it passes `limit` bytes. */
export async function readCapped(stream: ReadableStream<Uint8Array> | null, limit: number): Promise<Uint8Array> {
  if (!stream) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel();
      throw new MessageTooLarge(total);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** Both headers present, a well-formed signature, and a timestamp within 5 minutes. */
/** The relay endpoints' HMAC key; without one they are off (503), never open. */
export function inboundSecret(env: Bindings): string {
  if (!env.INBOUND_SECRET) {
    throw new AppError(
      503,
      "inbound_not_configured",
      "This deployment has no INBOUND_SECRET; the relay endpoints are off.",
    );
  }
  return env.INBOUND_SECRET;
}

export function checkHeaders(timestamp: string | undefined, signature: string | undefined): void {
  if (!timestamp || !signature || !/^sha256=[0-9a-f]{64}$/i.test(signature.trim())) {
    throw new Unauthorized(
      "X-Mailbot-Timestamp and X-Mailbot-Signature (sha256=<64 hex>) are required.",
      "invalid_signature",
    );
  }
  if (!/^\d{1,12}$/.test(timestamp) || Math.abs(Date.now() / 1000 - Number(timestamp)) > MAX_SKEW_SECONDS) {
    throw new Unauthorized(
      "X-Mailbot-Timestamp is more than 5 minutes away from the server's clock.",
      "timestamp_out_of_range",
    );
  }
}

/** Checks `sha256=<hex HMAC(secret, timestamp + "." + body)>` in constant time. */
export async function verifySignature(
  secret: string,
  timestamp: string,
  signature: string,
  body: Uint8Array,
): Promise<void> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const prefix = new TextEncoder().encode(`${timestamp}.`);
  const signed = new Uint8Array(prefix.byteLength + body.byteLength);
  signed.set(prefix, 0);
  signed.set(body, prefix.byteLength);
  const expected = `sha256=${toHex(await crypto.subtle.sign("HMAC", key, signed))}`;
  if (!safeEqual(expected, signature.trim().toLowerCase())) {
    throw new Unauthorized("The signature does not match the body.", "invalid_signature");
  }
}
