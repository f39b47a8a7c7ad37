import type { MessageRow } from "../../../db/schema";

/** One message to hand to a transport: the envelope and the exact bytes. */
export interface OutboundEnvelope {
  /** MAIL FROM (the bounce address). */
  mailFrom: string;
  /** RCPT TO, external recipients only (internal ones never reach a transport). */
  recipients: string[];
  raw: Uint8Array;
  /** The stored message with its bodies read back, for transports that take structured fields. */
  message: MessageRow;
  /** Reads an attachment's bytes (structured transports only). */
  attachment: (id: string) => Promise<Uint8Array>;
}

export interface RecipientFailure {
  recipient: string;
  code: string;
  message: string;
  permanent: boolean;
  /** False when the refusal is not the recipient's doing (our configuration): not a bounce. Default: a bounce. */
  bounce?: boolean;
}

export interface TransportResult {
  accepted: string[];
  rejected: RecipientFailure[];
  /** The transport's id for the message (Cloudflare's Message-ID, the relay's queue id). */
  providerMessageId: string | null;
}

/** A whole-message failure: `permanent` ones fail the message, others are retried with backoff. */
export class TransportError extends Error {
  constructor(
    message: string,
    readonly permanent: boolean,
    readonly code: string,
    /** A suggested wait before the next attempt (a rate limit, a daily quota). */
    readonly retryAfterSeconds?: number,
    /** The receiving side refused the recipients for good (SMTP 5xx at RCPT/DATA, a suppressed recipient): a hard bounce. */
    readonly bounce = false,
  ) {
    super(message);
    this.name = "TransportError";
  }
}

/** The one small interface every way out implements. */
export interface Transport {
  readonly name: "cloudflare" | "smtp" | "dev";
  send(envelope: OutboundEnvelope): Promise<TransportResult>;
}
