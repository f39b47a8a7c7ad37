import { env } from "cloudflare:workers";
import { inject } from "vitest";
import { createDb } from "../../src/db/client";
import { messages, threads } from "../../src/db/schema";
import { newMessageRow, rawKey } from "../../src/features/messages/message-store";
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
    db.insert(messages).values(
      newMessageRow({
        id,
        accountId: a.account.id,
        inboxId: a.inbox.id,
        threadId,
        direction: "outbound",
        status: "sent",
        fromAddress: a.inbox.address,
        to: opts.to,
        subject,
        bodyText: "Hello",
        rfcMessageId: opts.rfcMessageId ?? `<${id}@mailbot.test>`,
        size: 100,
        envelopeFrom: a.inbox.address,
        envelopeTo: opts.to.join(", "),
        rawKey: rawKey(a.account.id, a.inbox.id, id),
        // Outbound rows keep their own dedupe namespace, so an inbound copy of the same mail is not a duplicate.
        dedupeKey: `out:${id}`,
        searchText: "Hello",
        searchAddresses: opts.to.join(" "),
        droppedRecipients: [],
        attempts: 1,
        createdAt: now,
        sentAt: now,
      }),
    ),
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
