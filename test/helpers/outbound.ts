import { env } from "cloudflare:workers";
import { inject } from "vitest";
import { createDb } from "../../src/db/client";
import { messages, threads } from "../../src/db/schema";
import { newId } from "../../src/lib/ids";

interface Owner {
  account: { id: string };
  inbox: { id: string; address: string };
}

/**
 * An outbound message that already left, stored as the sending feature stores it, so reports
 * (DSN, ARF, relay events) have something of ours to link to.
 */
export async function insertSentMessage(
  a: Owner,
  opts: { to: string[]; rfcMessageId?: string; subject?: string },
): Promise<{ id: string; threadId: string }> {
  const now = Date.now();
  const id = newId("msg", now);
  const threadId = newId("thr", now);
  const subject = opts.subject ?? "Our newsletter";
  const db = createDb(env.DB);
  await db.batch([
    db.insert(threads).values({
      id: threadId,
      accountId: a.account.id,
      inboxId: a.inbox.id,
      subject,
      subjectKey: subject.toLowerCase(),
      participants: [a.inbox.address, ...opts.to],
      messageCount: 1,
      lastMessageAt: now,
      labels: [],
      createdAt: now,
      updatedAt: now,
    }),
    db.insert(messages).values({
      id,
      accountId: a.account.id,
      inboxId: a.inbox.id,
      threadId,
      direction: "outbound",
      status: "sent",
      fromAddress: a.inbox.address,
      fromName: null,
      to: opts.to,
      cc: [],
      bcc: [],
      replyTo: null,
      subject,
      bodyText: "Hello",
      bodyHtml: null,
      bodyTextKey: null,
      bodyHtmlKey: null,
      headers: {},
      headersTruncated: false,
      rfcMessageId: opts.rfcMessageId ?? `<${id}@mailbot.test>`,
      inReplyTo: null,
      references: [],
      labels: [],
      attachments: [],
      size: 100,
      authentication: null,
      autoSubmitted: null,
      reportType: null,
      parseError: null,
      envelopeFrom: a.inbox.address,
      envelopeTo: opts.to.join(", "),
      rawKey: `${a.account.id}/outbound/${id}.eml`,
      // Outbound rows keep their own dedupe namespace, so an inbound copy of the same mail is not a duplicate.
      dedupeKey: `out:${id}`,
      searchText: "Hello",
      searchAddresses: opts.to.join(" "),
      complainedAt: null,
      droppedRecipients: [],
      attempts: 1,
      lastError: null,
      leaseUntil: null,
      providerMessageId: null,
      createdAt: now,
      updatedAt: now,
      sentAt: now,
      receivedAt: null,
    }),
  ]);
  return { id, threadId };
}

/** What the test SMTP server (test/global/smtp-server.ts) accepted for one recipient. */
export interface Received {
  mailFrom: string;
  rcptTo: string[];
  user: string | null;
  raw: string;
}

/** Everything the test SMTP server accepted for a recipient, oldest first. */
export async function smtpReceived(rcpt: string): Promise<Received[]> {
  const res = await fetch(`${inject("smtpControlUrl")}/messages?rcpt=${encodeURIComponent(rcpt)}`);
  return (await res.json()) as Received[];
}

/** The id of a sent newsletter to `to` (what reports link to). */
export async function sentMessageId(a: Owner, to: string[]): Promise<string> {
  return (await insertSentMessage(a, { to, subject: "Newsletter" })).id;
}
