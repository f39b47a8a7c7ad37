import { bareAddress } from "./address";
import type { ParsedMail } from "./parse";
import { normalizeMessageId, rawHeaderPairs, toBytes } from "./parse";
import { enhancedStatus, isMailboxStatus } from "./status-codes";

/**
 * Delivery status notifications (RFC 3464) and abuse feedback reports (RFC 5965), read from a
 * parsed `multipart/report`. Only facts are extracted here; linking them to our outbound mail
 * and acting on them is the messages service's job.
 */

export interface ReportFinding {
  kind: "bounce" | "delay" | "delivered" | "complaint";
  bounceType: "hard" | "soft" | null;
  recipient: string | null;
  statusCode: string | null;
  diagnostic: string | null;
  feedbackType: string | null;
}

export interface DeliveryReport {
  type: "delivery_status" | "feedback";
  /** Message-ID of the mail the report is about (from the returned message or its headers). */
  originalMessageId: string | null;
  /** Envelope sender of the original, when the report says it (ARF Original-Mail-From). */
  originalMailFrom: string | null;
  findings: ReportFinding[];
}

const decoder = new TextDecoder();
/** Recipients read from one report; more are ignored (one statement, event and audit entry each). */
const MAX_FINDINGS = 50;

/** Recognises a DSN or ARF report in parsed mail; null for ordinary mail. */
export function readReport(mail: ParsedMail): DeliveryReport | null {
  if (!mail.reportType || !mail.email) return null;
  const parts = mail.email.attachments;
  const original = parts.find((a) =>
    ["message/rfc822", "text/rfc822-headers", "message/rfc822-headers", "message/global"].includes(a.mimeType),
  );
  const originalBytes = original ? toBytes(original.content) : null;
  const originalHeaders = originalBytes ? rawHeaderPairs(originalBytes) : [];
  // Some reporters (the RFC 5965 example among them) break the returned header block with a
  // stray blank line, so fall back to the first Message-ID line anywhere in the returned part.
  const originalMessageId =
    normalizeMessageId(originalHeaders.find((h) => h.key === "message-id")?.value) ??
    (originalBytes ? normalizeMessageId(/^message-id:[ \t]*(\S+)/im.exec(decoder.decode(originalBytes))?.[1]) : null);

  if (mail.reportType === "delivery_status") {
    const part = parts.find((a) => /^message\/(global-)?delivery-status$/.test(a.mimeType));
    const blocks = part ? fieldBlocks(decoder.decode(toBytes(part.content))) : [];
    const findings = blocks.flatMap((f) => dsnFinding(f)).slice(0, MAX_FINDINGS);
    return { type: "delivery_status", originalMessageId, originalMailFrom: null, findings };
  }

  const part = parts.find((a) => a.mimeType === "message/feedback-report");
  const fields = part ? (fieldBlocks(decoder.decode(toBytes(part.content)))[0] ?? new Map()) : new Map();
  const recipient = angleless(fields.get("original-rcpt-to")?.[0] ?? fields.get("removal-recipient")?.[0] ?? null);
  return {
    type: "feedback",
    originalMessageId,
    originalMailFrom: angleless(fields.get("original-mail-from")?.[0] ?? null),
    findings: [
      {
        kind: "complaint",
        bounceType: null,
        recipient,
        statusCode: null,
        diagnostic: null,
        feedbackType: fields.get("feedback-type")?.[0]?.toLowerCase() ?? "abuse",
      },
    ],
  };
}

/** One per-recipient DSN block to a finding (RFC 3464 §2.3). */
function dsnFinding(fields: Map<string, string[]>): ReportFinding[] {
  const action = fields.get("action")?.[0]?.toLowerCase();
  if (!action) return [];
  const recipient = angleless(
    afterType(fields.get("final-recipient")?.[0] ?? fields.get("original-recipient")?.[0] ?? null),
  );
  const status = /\d\.\d{1,3}\.\d{1,3}/.exec(fields.get("status")?.[0] ?? "")?.[0] ?? null;
  const diagnostic = afterType(fields.get("diagnostic-code")?.[0] ?? null);
  const base = { recipient, statusCode: status, diagnostic, feedbackType: null };
  if (action === "delivered" || action === "relayed" || action === "expanded") {
    return [{ kind: "delivered", bounceType: null, ...base }];
  }
  if (action === "delayed") return [{ kind: "delay", bounceType: "soft", ...base }];
  if (action !== "failed") return [];
  // A failure is hard only when permanent and about the mailbox (RFC 3463 5.1.x, 5.2.0-2): a
  // transient one (4xx), or a permanent one about policy (5.7.x), routing (5.4.x), the mail
  // system (5.3.x) or content says nothing about the recipient and counts as soft. A bare 5.0.0
  // (Postfix's status for a reply without an enhanced code) defers to the remote's own reply.
  const reply = /\b([245])\d\d\b/.exec(diagnostic ?? "");
  const transient = status ? status.startsWith("4") : reply?.[1] === "4";
  const precise = status && status !== "5.0.0" ? status : (enhancedStatus(diagnostic) ?? null);
  // Without an enhanced code the remote's own reply decides: 554 (transaction failed) is how
  // content and policy refusals read; any other permanent reply (or none) is the mailbox's.
  const mailbox = precise && precise !== "5.0.0" ? isMailboxStatus(precise) : reply?.[0] !== "554";
  return [{ kind: "bounce", bounceType: transient || !mailbox ? "soft" : "hard", ...base }];
}

/** "rfc822; a@b" → "a@b"; "smtp; 550 …" → "550 …". */
function afterType(value: string | null): string | null {
  if (!value) return null;
  const i = value.indexOf(";");
  const rest = (i === -1 ? value : value.slice(i + 1)).trim();
  return rest.length > 0 ? rest.slice(0, 1000) : null;
}

function angleless(value: string | null): string | null {
  if (!value) return null;
  const v = bareAddress(value);
  return v.length > 0 ? v : null;
}

/** "Name: value" blocks separated by blank lines, continuation lines unfolded, names lower-cased. */
function fieldBlocks(text: string): Map<string, string[]>[] {
  return text
    .split(/\r?\n\s*\r?\n/)
    .map((block) => {
      const fields = new Map<string, string[]>();
      for (const line of block.split(/\r?\n(?![ \t])/)) {
        const i = line.indexOf(":");
        if (i <= 0) continue;
        const key = line.slice(0, i).trim().toLowerCase();
        const value = line
          .slice(i + 1)
          .replace(/\r?\n[ \t]+/g, " ")
          .trim();
        fields.set(key, [...(fields.get(key) ?? []), value]);
      }
      return fields;
    })
    .filter((f) => f.size > 0);
}
