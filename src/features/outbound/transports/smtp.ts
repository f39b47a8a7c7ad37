import { type SmtpConfig, SmtpError, smtpSend } from "../../../lib/smtp";
import { type Transport, TransportError } from "./types";

/** A submission relay (587 STARTTLS or 465 TLS) with authentication, through `cloudflare:sockets`. */
export function smtpTransport(config: SmtpConfig): Transport {
  return {
    name: "smtp",
    async send(envelope) {
      try {
        const result = await smtpSend(config, envelope.mailFrom, envelope.recipients, envelope.raw);
        return {
          accepted: result.accepted,
          rejected: result.rejected.map((f) => ({
            recipient: f.recipient,
            code: String(f.code),
            message: f.message,
            permanent: f.code >= 500,
          })),
          providerMessageId: /queued as\s+([^\s]+)/i.exec(result.response)?.[1] ?? null,
        };
      } catch (err) {
        if (err instanceof SmtpError) {
          throw new TransportError(
            err.message.slice(0, 500),
            err.permanent,
            `smtp_${err.code || err.stage}`,
            undefined,
            err.permanent && ["rcpt", "data", "data-end"].includes(err.stage),
          );
        }
        throw err;
      }
    },
  };
}
