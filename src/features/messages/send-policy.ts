import type { InboxRow } from "../../db/schema";
import type { MailAddress } from "../../email/compose";
import type { ServiceContext } from "../../lib/context";

/** What the pre-send policy sees: the inbox, the envelope and the exact bytes that would leave. */
export interface PolicyInput {
  inbox: InboxRow;
  from: MailAddress;
  recipients: string[];
  subject: string;
  text: string | null;
  html: string | null;
  attachments: { filename: string; contentType: string; size: number }[];
  raw: Uint8Array;
  /** `accept` on the API path; `deliver` when the queue consumer re-checks before sending. */
  stage: "accept" | "deliver";
}

/**
 * The one pre-send policy step, run after the inbox and send-limit checks and before the size
 * checks (API.md's order). The sender-authentication feature fills it in: the SPF/DKIM/DMARC gate
 * and the phishing scorer throw `SendBlocked` (422 `send_blocked`, with `details.reason`); the
 * caller audits the refusal and sends nothing. Today it allows everything.
 */
export async function checkSendPolicy(_ctx: ServiceContext, _input: PolicyInput): Promise<void> {}

/**
 * Signs the bytes about to leave (DKIM, filled in by the sender-authentication feature); today the
 * message goes out as composed.
 */
export async function signOutbound(_ctx: ServiceContext, _inbox: InboxRow, raw: Uint8Array): Promise<Uint8Array> {
  return raw;
}
