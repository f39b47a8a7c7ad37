import { type SmtpConfig, SmtpError, type SmtpRecipientFailure, smtpSend } from "../../../lib/smtp";
import { isRecipientBounce } from "../../../mail/status-codes";
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
            // Only a mailbox-level refusal is the recipient's bounce; a relay's policy or quota
            // refusal at RCPT (5.7.1 relaying denied, 5.4.5 quota) is a transport failure.
            bounce: isRecipientBounce("rcpt", f.code, f.message),
          })),
          providerMessageId: /queued as\s+([^\s]+)/i.exec(result.response)?.[1] ?? null,
        };
      } catch (err) {
        if (err instanceof SmtpError) {
          // A refusal of the whole transaction is a bounce only when it is every recipient refused
          // at RCPT for a mailbox-level reason; after the data (content, policy) it never is.
          const rejected = (err as SmtpError & { rejected?: SmtpRecipientFailure[] }).rejected ?? [];
          const bounce =
            err.permanent &&
            err.stage === "rcpt" &&
            rejected.length > 0 &&
            rejected.every((f) => isRecipientBounce("rcpt", f.code, f.message));
          throw new TransportError(
            err.message.slice(0, 500),
            err.permanent,
            `smtp_${err.code || err.stage}`,
            undefined,
            bounce,
          );
        }
        throw err;
      }
    },
  };
}
