/**
 * Which refusals are about the recipient's mailbox (RFC 3463), and so a hard bounce that may count
 * against the sender and suppress the address. Everything else that is permanent (policy 5.7.x,
 * network/routing 5.4.x, mail system 5.3.x, content refused at DATA, a relay's own quota or
 * relaying refusal) says something about the path or the message, not about the recipient: the
 * message fails, and neither reputation nor suppressions move.
 */

/** An enhanced status code ("5.1.1") found in a reply or diagnostic text, or null. */
export function enhancedStatus(text: string | null | undefined): string | null {
  return /\b([245]\.\d{1,3}\.\d{1,3})\b/.exec(text ?? "")?.[1] ?? null;
}

/**
 * A permanent mailbox-level status: 5.1.x (addressing: no such user, bad domain, moved) except
 * 5.1.7 / 5.1.8 (the *sender's* address is bad: our side), and 5.2.0 / 5.2.1 / 5.2.2 (the mailbox
 * is disabled or full). 5.2.3 (message too long) and 5.2.4 (list expansion) are about the message.
 */
export function isMailboxStatus(status: string | null | undefined): boolean {
  const m = /^5\.(\d{1,3})\.(\d{1,3})$/.exec(status ?? "");
  if (!m) return false;
  const [subject, detail] = [Number(m[1]), Number(m[2])];
  if (subject === 1) return detail !== 7 && detail !== 8;
  if (subject === 2) return detail <= 2;
  return false;
}

/**
 * Reply texts that name the recipient's mailbox as the problem, for replies with no enhanced
 * status code. Our SMTP transport always talks to a relay, so a bare 5xx is as likely the
 * relay's own refusal (`550 Relaying denied`, a quota) as the mailbox's.
 */
const MAILBOX_TEXT =
  /user unknown|unknown user|no such (user|mailbox|recipient)|mailbox (unavailable|not found|does not exist)|unknown recipient|does not exist|recipient rejected|invalid recipient/i;

/**
 * Whether an SMTP refusal at RCPT TO is a hard bounce of that recipient: a permanent mailbox-level
 * enhanced status when the reply has one; without one, a 5xx only when its text says the
 * mailbox is unknown or unavailable (any other bare 5xx is the relay's: a transport failure).
 * Refusals after the data (content, policy) are never a recipient's bounce, whatever their code.
 */
export function isRecipientBounce(stage: "rcpt" | "data", code: number, text: string | null | undefined): boolean {
  if (stage !== "rcpt" || code < 500) return false;
  const status = enhancedStatus(text);
  if (status) return isMailboxStatus(status);
  return MAILBOX_TEXT.test(text ?? "");
}
