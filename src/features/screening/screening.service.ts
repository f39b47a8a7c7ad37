/**
 * Screening in the inbound pipeline: gathers what the pure screener needs (attachments' text,
 * the trusted authentication verdicts, the inbox's known correspondents) and applies the inbox's
 * policy (mode and sender lists) to the verdict.
 */
import { and, desc, eq, sql } from "drizzle-orm";
import type { Db } from "../../db/client";
import { type InboxRow, type InboxScreeningPolicy, messages, type SenderRules } from "../../db/schema";
import { suppressionAddress } from "../../mail/address";
import { type AuthVerdicts, dmarcPassDomain, type ParsedMail, singleFromMailbox } from "../../mail/parse";
import { notQuarantined } from "../messages/messages.service";
import { type Screening, screenMessage } from "./screener";

export const DEFAULT_AUTO_REPLY_LIMIT = 5;
/** The attachment text the screener reads, per attachment (text/* and markup only). */
const ATTACHMENT_TEXT_LIMIT = 256 * 1024;
/** How many recent messages name the inbox's known correspondents. */
const KNOWN_SENDERS_WINDOW = 200;

export interface ResolvedPolicy {
  mode: "flag" | "quarantine" | "reject";
  autoReplyLimit: number;
  allow: string[];
  block: string[];
}

export function policyOf(inbox: Pick<InboxRow, "screening" | "senderRules">): ResolvedPolicy {
  const p: InboxScreeningPolicy = inbox.screening ?? {};
  return {
    mode: p.mode ?? "flag",
    autoReplyLimit: p.auto_reply_limit ?? DEFAULT_AUTO_REPLY_LIMIT,
    allow: inbox.senderRules?.allow ?? [],
    block: inbox.senderRules?.block ?? [],
  };
}

/** A sender-list entry as stored: an address without `+tag`, or a bare domain, lower-cased. */
export function normalizeRule(entry: string): string {
  const e = entry.trim().toLowerCase().replace(/^@/, "");
  return e.includes("@") ? suppressionAddress(e) : e.replace(/\.$/, "");
}

export function normalizeRules(rules: SenderRules): SenderRules {
  return { allow: [...new Set(rules.allow.map(normalizeRule))], block: [...new Set(rules.block.map(normalizeRule))] };
}

/** Whether an address is on a list: the exact address (tag folded), its domain, or a parent domain. */
export function onList(list: string[], address: string | null): string | null {
  if (!address || list.length === 0) return null;
  const a = suppressionAddress(address);
  const domain = a.slice(a.lastIndexOf("@") + 1);
  for (const entry of list) {
    if (entry.includes("@") ? entry === a : domain === entry || domain.endsWith(`.${entry}`)) return entry;
  }
  return null;
}

export type Disposition =
  | { action: "store"; quarantine: boolean; reason: string | null }
  | { action: "reject"; reason: string; rule: string | null };

/**
 * Whether the From domain is proven by the trusted verdicts: a DMARC pass from an authserv-id the
 * ingestion path trusts, whose `header.from` is the domain of the From this parser read, in a
 * message with one From header naming one mailbox. DMARC is the one verdict that speaks for the
 * From header's domain (SPF and DKIM alone may pass for any other domain), so a domain without a
 * DMARC record never earns an allow rule's exemption; and a pass for another mailbox (a second
 * From header, a list of mailboxes: the receiver and this parser may read different ones) does
 * not carry over.
 */
export function senderAuthenticated(
  fromAddress: string | null,
  headers: Record<string, string | string[]>,
  trusted: string[],
): boolean {
  if (!fromAddress || !singleFromMailbox(headers)) return false;
  const domain = fromAddress.slice(fromAddress.lastIndexOf("@") + 1).toLowerCase();
  return domain !== "" && dmarcPassDomain(headers, trusted) === domain;
}

/** The allow rule a From matches that is not honoured because nothing authenticates it (null otherwise). */
export function unhonouredAllow(policy: ResolvedPolicy, sender: string | null, authenticated: boolean): string | null {
  return authenticated ? null : onList(policy.allow, sender);
}

/**
 * What the inbox's policy does with a screened message. Blocked senders are refused in `reject`
 * mode and quarantined otherwise (on the From alone: blocking a forged name harms nobody);
 * allowed senders are never quarantined or refused (still screened), but only when `authenticated`
 * (see senderAuthenticated): anyone can write an allowed address in From, so an unauthenticated
 * match counts for nothing. `quarantine` holds suspicious and dangerous mail; `reject` refuses
 * dangerous mail and holds suspicious mail.
 */
export function dispose(
  policy: ResolvedPolicy,
  screening: Screening,
  sender: string | null,
  authenticated: boolean,
): Disposition {
  const blocked = onList(policy.block, sender);
  const allowed = authenticated ? onList(policy.allow, sender) : null;
  if (blocked && !allowed) {
    if (policy.mode === "reject") return { action: "reject", reason: "sender_blocked", rule: blocked };
    return { action: "store", quarantine: true, reason: "sender_blocked" };
  }
  if (allowed || screening.verdict === "clean" || policy.mode === "flag") {
    return { action: "store", quarantine: false, reason: null };
  }
  if (policy.mode === "reject" && screening.verdict === "dangerous") {
    return { action: "reject", reason: "screening_dangerous", rule: null };
  }
  return { action: "store", quarantine: true, reason: `screening_${screening.verdict}` };
}

type KnownSender = { address: string; name?: string | null };

/**
 * The inbox's known correspondents (senders of its last 200 messages, recipients of its sends),
 * for the look-alike check. Held (quarantined) or flagged mail is not a correspondent: otherwise a
 * look-alike's first message would vouch for its second. Kept in the isolate for
 * KNOWN_SENDERS_TTL_MS (a busy inbox otherwise reads up to 200 rows per mail); an inbound mail
 * stored in this isolate adds its sender at once (noteKnownSender), a send drops the entry
 * (forgetKnownSenders), so only other isolates' news waits for the TTL.
 */
async function knownSendersOf(db: Db, inbox: InboxRow, now: number): Promise<KnownSender[]> {
  const hit = knownSenders.get(inbox.id);
  if (hit && hit.accountId === inbox.accountId && now >= hit.at && now - hit.at < KNOWN_SENDERS_TTL_MS) {
    return hit.senders;
  }
  const recent = await db
    .select({ from: messages.fromAddress, name: messages.fromName, to: messages.to, direction: messages.direction })
    .from(messages)
    .where(
      and(
        eq(messages.inboxId, inbox.id),
        eq(messages.accountId, inbox.accountId),
        notQuarantined(),
        // Only mail that screened clean (or predates screening): a flagged look-alike's first
        // message must not make its second one "known" either.
        sql`(${messages.screening} IS NULL OR json_extract(${messages.screening}, '$.verdict') = 'clean')`,
      ),
    )
    .orderBy(desc(messages.id))
    .limit(KNOWN_SENDERS_WINDOW)
    .all();
  const senders: KnownSender[] = [];
  for (const r of recent) {
    if (r.direction === "inbound" && r.from) senders.push({ address: r.from, name: r.name });
    if (r.direction === "outbound") for (const t of r.to.slice(0, 10)) senders.push({ address: t });
  }
  if (knownSenders.size >= KNOWN_SENDERS_CACHE_MAX) knownSenders.clear();
  knownSenders.set(inbox.id, { accountId: inbox.accountId, at: now, senders });
  return senders;
}

const knownSenders = new Map<string, { accountId: string; at: number; senders: KnownSender[] }>();
const KNOWN_SENDERS_TTL_MS = 30_000;
const KNOWN_SENDERS_CACHE_MAX = 2_000;

/** An inbound mail was stored, not held and screened clean: its sender is a known correspondent from now on. */
export function noteKnownSender(inboxId: string, address: string | null, name: string | null): void {
  const entry = knownSenders.get(inboxId);
  if (!entry || !address) return;
  entry.senders = [{ address, name }, ...entry.senders].slice(0, KNOWN_SENDERS_WINDOW * 2);
}

/** The inbox sent mail: its recipients are correspondents; read them again on the next mail. */
export function forgetKnownSenders(inboxId: string): void {
  knownSenders.delete(inboxId);
}

/** Screens a parsed inbound message for this inbox. At most one read (the known correspondents). */
export async function screenInbound(
  db: Db,
  inbox: InboxRow,
  parsed: ParsedMail,
  authentication: AuthVerdicts | null,
  now: number,
): Promise<Screening> {
  const knownSenders = await knownSendersOf(db, inbox, now);
  const decoder = new TextDecoder("utf-8");
  return screenMessage({
    subject: parsed.subject,
    text: parsed.bodyText,
    html: parsed.bodyHtml,
    fromAddress: parsed.fromAddress,
    fromName: parsed.fromName,
    authentication,
    attachments: parsed.attachments.map((a) => ({
      filename: a.filename,
      contentType: a.contentType,
      // Text the screener can read cheaply: text/*, markup, JSON; binaries are named only.
      text:
        /^text\/|svg|json|xml|html/i.test(a.contentType) || /\.(html?|svg|txt|md|csv|json|xml)$/i.test(a.filename ?? "")
          ? decoder.decode(a.content.subarray(0, ATTACHMENT_TEXT_LIMIT))
          : null,
    })),
    knownSenders,
    now,
  });
}
