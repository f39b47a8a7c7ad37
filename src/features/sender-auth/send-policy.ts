import { and, eq, gte, lt, sql } from "drizzle-orm";
import { config } from "../../config";
import { once } from "../../db/client";
import { insertRow, type Statement } from "../../db/compiled";
import { domains, type InboxRow, messages, sendFingerprints } from "../../db/schema";
import { inListOf } from "../../db/sql";
import { benchHooks } from "../../lib/bench";
import type { BaseContext, ServiceContext } from "../../lib/context";
import { sha256Hex } from "../../lib/crypto";
import { SendBlocked } from "../../lib/errors";
import { newId } from "../../lib/ids";
import { DAY_MS } from "../../lib/time";
import type { MailAddress } from "../../mail/compose";
import { eventStatement } from "../events/events.service";
import { transportName } from "../outbound/transports";
import { enforceSenderAuth } from "./compliance.service";
import { DKIM_SELECTOR, dkimSign } from "./dkim";
import { domainSigningKey, sharedDomainKey } from "./dkim-keys";
import { scorePhishing } from "./phishing";

/** What the pre-send policy sees: the inbox, the envelope and the exact bytes that would leave. */
export interface PolicyInput {
  inbox: InboxRow;
  from: MailAddress;
  recipients: string[];
  subject: string;
  text: string | null;
  html: string | null;
  attachments: { filename: string; contentType: string; size: number; text?: string | null }[];
  raw: Uint8Array;
  /** `accept` on the API path; `deliver` when the queue consumer re-checks before sending. */
  stage: "accept" | "deliver";
}

/** How far back the "same body sprayed to many new recipients" signal looks. */
const SPRAY_WINDOW_MS = DAY_MS;

/**
 * The one pre-send policy step, run after the inbox and send-limit checks and before the size
 * checks (API.md's order): the SPF/DKIM/DMARC gate of the inbox's domain, then (on the API path)
 * the phishing scorer. A refusal throws `SendBlocked` (422 `send_blocked`, `details.reason` and
 * the evidence); a temporary DNS failure throws `DnsUnavailable` (503, retry), which never lets
 * the send through. The consumer re-runs the gate before sending (DNS answers come from the
 * per-isolate cache while their TTL lasts); content does not change after acceptance, so the
 * scorer runs once.
 */
export async function checkSendPolicy(ctx: ServiceContext, input: PolicyInput): Promise<PolicyOutcome> {
  if (benchHooks(ctx.env).skipSendPolicy) return { statements: [] };
  if (input.stage !== "accept") {
    await enforceSenderAuth(ctx, input.inbox);
    return { statements: [] };
  }

  const bodyHash = await sha256Hex(normaliseBody(input.text ?? input.html ?? ""));
  const since = ctx.now() - SPRAY_WINDOW_MS;
  // The gate and the two reads the scorer needs are independent: one round trip, not three.
  // The gate still decides first: its refusal is the one thrown.
  const [, fresh, earlier] = await Promise.all([
    enforceSenderAuth(ctx, input.inbox),
    newRecipients(ctx, input.recipients),
    EARLIER_FINGERPRINTS.all(ctx.db, { accountId: ctx.accountId, bodyHash, since }),
  ]);
  const spray = fresh.length > 0 ? new Set([...earlier.flatMap((e) => e.r), ...fresh]).size : 0;
  const verdict = scorePhishing({
    subject: input.subject,
    text: input.text,
    html: input.html,
    attachments: input.attachments,
    sprayRecipients: spray,
  });
  if (verdict.blocked) {
    throw new SendBlocked(
      "phishing_suspected",
      `The message looks like phishing (score ${verdict.score}, threshold ${verdict.threshold}): ${verdict.signals
        .map((s) => s.name)
        .join(", ")}.`,
      { score: verdict.score, threshold: verdict.threshold, signals: verdict.signals },
    );
  }
  if (fresh.length === 0) return { statements: [] };
  // Remembered only for sends that are stored: the caller adds this to the batch that writes the
  // message (no write of its own). Rows past the window are swept by scheduled().
  return {
    statements: [
      insertRow(sendFingerprints, {
        id: newId("sfp", ctx.now()),
        accountId: ctx.accountId,
        bodyHash,
        newRecipients: fresh,
        createdAt: ctx.now(),
      }),
    ],
  };
}

/** What a passed policy check leaves to write: statements for the acceptance batch. */
export interface PolicyOutcome {
  statements: Statement[];
}

/** Drops send fingerprints older than the spray window (the 5-minute cron; created_at index). */
export async function sweepSendFingerprints(ctx: BaseContext): Promise<number> {
  const now = ctx.now();
  const result = await ctx.db
    .delete(sendFingerprints)
    .where(lt(sendFingerprints.createdAt, now - SPRAY_WINDOW_MS))
    .run();
  return result.meta.changes ?? 0;
}

/** Text with whitespace and case folded, so trivial variations of one body hash alike. */
function normaliseBody(text: string): string {
  return text.toLowerCase().replace(/\s+/g, " ").trim();
}

/** Recipients that have never written to this account (lower-case). */
async function newRecipients(ctx: ServiceContext, recipients: string[]): Promise<string[]> {
  const all = [...new Set(recipients.map((r) => r.toLowerCase()))];
  if (all.length === 0) return [];
  const known = await KNOWN_SENDERS.all(ctx.db, { accountId: ctx.accountId, addresses: JSON.stringify(all) });
  const seen = new Set(known.map((k) => k.a));
  return all.filter((r) => !seen.has(r));
}

/**
 * Which of the JSON list `addresses` (lower-case) have written to the account `accountId`. Shaped
 * for the partial index messages_account_inbound_from_idx: the same `lower(from_address)`
 * expression and the literal `direction = 'inbound'` (so the planner proves the index's WHERE
 * from the SQL text alone, without relying on re-preparing with bound values). Tested with
 * EXPLAIN QUERY PLAN.
 */
export const KNOWN_SENDERS = once((db) =>
  db
    .selectDistinct({ a: sql<string>`lower(${messages.fromAddress})` })
    .from(messages)
    .where(
      and(
        eq(messages.accountId, sql.placeholder("accountId")),
        sql`${messages.direction} = 'inbound'`,
        // One JSON parameter, whatever the number of recipients (D1 binds at most 100).
        inListOf(sql`lower(${messages.fromAddress})`, "addresses"),
      ),
    )
    .prepare(),
);

/** The recipients of earlier sends of the same body in the spray window. */
const EARLIER_FINGERPRINTS = once((db) =>
  db
    .select({ r: sendFingerprints.newRecipients })
    .from(sendFingerprints)
    .where(
      and(
        eq(sendFingerprints.accountId, sql.placeholder("accountId")),
        eq(sendFingerprints.bodyHash, sql.placeholder("bodyHash")),
        gte(sendFingerprints.createdAt, sql.placeholder("since")),
      ),
    )
    .prepare(),
);

/**
 * DKIM-signs the bytes about to leave through the SMTP transport (rsa-sha256, relaxed/relaxed,
 * `d=` the inbox's domain, selector `default`). Cloudflare Email Service signs with its own keys,
 * so other transports get the bytes unchanged. No key, no signature: the gate has already refused
 * such a send, so this only happens for a bench run with the policy switched off.
 */
export async function signOutbound(ctx: ServiceContext, inbox: InboxRow, raw: Uint8Array): Promise<Uint8Array> {
  if (transportName(ctx.env) !== "smtp") return raw;
  // A retry after a transient failure finds the bytes it signed (and stored) last time.
  if (new TextDecoder().decode(raw.subarray(0, 15)).toLowerCase() === "dkim-signature:") return raw;
  const domain = inbox.domain.toLowerCase();
  let key: CryptoKey | null = null;
  if (domain === config(ctx.env).mailDomain.toLowerCase()) {
    key = (await sharedDomainKey(ctx.env))?.key ?? null;
  } else {
    const row = await ctx.db
      .select()
      .from(domains)
      .where(and(eq(domains.accountId, inbox.accountId), eq(domains.domain, domain)))
      .get();
    if (row) key = await domainSigningKey(ctx.env, row);
  }
  if (!key) return raw;
  return dkimSign(raw, { domain, selector: DKIM_SELECTOR, key, now: ctx.now() });
}

/**
 * The `message.blocked` event of a refused send, for the batch that audits the refusal. On the
 * API path nothing was stored, so `message_id` and `thread_id` are null; the consumer's re-check
 * blocks a stored message and names it.
 */
export function blockedEvent(
  ctx: ServiceContext,
  m: {
    inboxId: string;
    messageId: string | null;
    threadId: string | null;
    fromAddress: string;
    to: string[];
    subject: string | null;
    details: unknown;
    stage: "accept" | "deliver";
  },
): { id: string; statement: Statement } {
  const details = (m.details ?? {}) as Record<string, unknown>;
  return eventStatement(
    ctx,
    "message.blocked",
    { inboxId: m.inboxId, threadId: m.threadId, messageId: m.messageId },
    {
      message_id: m.messageId,
      inbox_id: m.inboxId,
      thread_id: m.threadId,
      from_address: m.fromAddress,
      to: m.to,
      subject: m.subject,
      reason: details.reason ?? null,
      details,
      stage: m.stage,
    },
  );
}
