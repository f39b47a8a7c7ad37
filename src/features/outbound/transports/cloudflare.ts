import { stripControls } from "../../../mail/address";
import type { Transport } from "./types";
import { TransportError } from "./types";

/** Email Service error codes that no retry can fix. Anything else (and unknown codes) is retried. */
const PERMANENT = new Set([
  "E_SENDER_NOT_VERIFIED",
  "E_SENDER_DOMAIN_NOT_AVAILABLE",
  "E_RECIPIENT_NOT_ALLOWED",
  "E_RECIPIENT_SUPPRESSED",
  "E_TOO_MANY_RECIPIENTS",
  "E_CONTENT_TOO_LARGE",
  "E_HEADER_NOT_ALLOWED",
  "E_HEADER_USE_API_FIELD",
  "E_HEADER_VALUE_INVALID",
  "E_HEADER_VALUE_TOO_LONG",
  "E_HEADER_NAME_INVALID",
  "E_HEADERS_TOO_LARGE",
  "E_HEADERS_TOO_MANY",
  "E_VALIDATION_ERROR",
  "E_FIELD_MISSING",
  "E_INVALID_ADDRESS",
]);
/** Permanent errors that are the recipient's doing: hard bounces for the inbox's reputation. */
const BOUNCE = new Set(["E_RECIPIENT_SUPPRESSED"]);
/** Quota errors: retried, but not soon. */
const QUOTA: Record<string, number> = { E_RATE_LIMIT_EXCEEDED: 60, E_DAILY_LIMIT_EXCEEDED: 3600 };
/** Headers Email Service lets a sender set besides X-*; the rest are written by the platform. */
const PASSED_HEADERS = new Set(["in-reply-to", "references", "list-unsubscribe", "list-unsubscribe-post", "list-id"]);

/**
 * Cloudflare Email Service through the `send_email` binding (the production default). It takes
 * structured fields and writes its own MIME, Message-ID and DKIM signature, so the id it returns
 * replaces ours (the consumer stores it: replies to the message then thread correctly).
 */
export function cloudflareTransport(binding: SendEmail): Transport {
  return {
    name: "cloudflare",
    async send(envelope) {
      const m = envelope.message;
      const external = new Set(envelope.recipients);
      const pick = (list: string[]) => list.filter((a) => external.has(a));
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(m.headers)) {
        if ((PASSED_HEADERS.has(name) || name.startsWith("x-")) && typeof value === "string") headers[name] = value;
      }
      try {
        const result = await binding.send({
          // The binding writes these as given: control characters (from rows older than the input
          // checks) must not reach its headers.
          from: m.fromName
            ? { email: m.fromAddress as string, name: stripControls(m.fromName) }
            : (m.fromAddress as string),
          to: pick(m.to),
          cc: pick(m.cc),
          bcc: pick(m.bcc),
          ...(m.replyTo ? { replyTo: m.replyTo } : {}),
          subject: stripControls(m.subject ?? ""),
          ...(m.bodyText !== null ? { text: m.bodyText } : {}),
          ...(m.bodyHtml !== null ? { html: m.bodyHtml } : {}),
          headers,
          attachments: await Promise.all(
            m.attachments.map(async (a) => ({
              filename: a.filename ?? "attachment",
              type: a.content_type,
              disposition: a.disposition,
              content: (await envelope.attachment(a.id)).buffer as ArrayBuffer,
              ...(a.content_id ? { contentId: a.content_id } : {}),
            })),
          ),
        } as unknown as EmailMessage);
        return { accepted: envelope.recipients, rejected: [], providerMessageId: result?.messageId ?? null };
      } catch (err) {
        const code = String((err as { code?: unknown }).code ?? "E_UNKNOWN");
        const message = `${code}: ${(err as Error).message ?? String(err)}`.slice(0, 500);
        throw new TransportError(message, PERMANENT.has(code), code, QUOTA[code], BOUNCE.has(code));
      }
    },
  };
}
