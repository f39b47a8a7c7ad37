import { sql } from "drizzle-orm";
import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";
import type { AuthVerdicts } from "../mail/parse";

/**
 * D1 schema. Conventions: snake_case columns, epoch-ms integer times, prefixed time-sortable
 * text ids made in code (no autoincrement), JSON arrays/objects in text columns. Every table
 * holding account data carries `account_id` so every query can be scoped by it; later features
 * (messages, threads, events, webhooks, domains) add their own tables beside these.
 */

export const accounts = sqliteTable(
  "accounts",
  {
    id: text("id").primaryKey(),
    /** Short, stable, public id used in shared-domain addresses: `{username}--{short_id}@…`. */
    shortId: text("short_id").notNull(),
    name: text("name"),
    email: text("email").notNull(),
    tier: text("tier").notNull().default("sandbox"),
    status: text("status", { enum: ["active", "suspended", "deleted"] })
      .notNull()
      .default("active"),
    newAccountUntil: integer("new_account_until").notNull(),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
    deletedAt: integer("deleted_at"),
  },
  (t) => [uniqueIndex("accounts_short_id_uq").on(t.shortId), uniqueIndex("accounts_email_uq").on(t.email)],
);

export const apiKeys = sqliteTable(
  "api_keys",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id")
      .notNull()
      .references(() => accounts.id),
    name: text("name").notNull(),
    /** The key's first 8 characters, in clear: the only thing used to find candidates. */
    prefix: text("prefix").notNull(),
    /** Argon2id PHC string of the whole key. The key itself is never stored. */
    keyHash: text("key_hash").notNull(),
    scopes: text("scopes", { mode: "json" }).$type<string[]>().notNull(),
    inboxIds: text("inbox_ids", { mode: "json" }).$type<string[] | null>(),
    createdAt: integer("created_at").notNull(),
    lastUsedAt: integer("last_used_at"),
    revokedAt: integer("revoked_at"),
  },
  (t) => [index("api_keys_prefix_idx").on(t.prefix), index("api_keys_account_idx").on(t.accountId, t.id)],
);

export const inboxes = sqliteTable(
  "inboxes",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id")
      .notNull()
      .references(() => accounts.id),
    username: text("username").notNull(),
    domain: text("domain").notNull(),
    /** Full lower-case address; unique across the deployment. */
    address: text("address").notNull(),
    displayName: text("display_name"),
    status: text("status", { enum: ["active", "disabled"] })
      .notNull()
      .default("active"),
    disabledReason: text("disabled_reason", { enum: ["deactivated", "bounce_rate", "complaint_rate"] }),
    labels: text("labels", { mode: "json" }).$type<string[]>().notNull(),
    /** Inbound screening policy and the loop limit (null: the defaults, see screening/policy.ts). */
    screening: text("screening", { mode: "json" }).$type<InboxScreeningPolicy | null>(),
    /** Sender allow / block lists (lower-case addresses or domains, `+tag` folded). */
    senderRules: text("sender_rules", { mode: "json" }).$type<SenderRules | null>(),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [uniqueIndex("inboxes_address_uq").on(t.address), index("inboxes_account_idx").on(t.accountId, t.id)],
);

export const auditLog = sqliteTable(
  "audit_log",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id").notNull(),
    /** Position in the account's chain, 1-based; unique so concurrent writers cannot fork it. */
    seq: integer("seq").notNull(),
    action: text("action").notNull(),
    actorType: text("actor_type").notNull(),
    actorId: text("actor_id"),
    targetType: text("target_type"),
    targetId: text("target_id"),
    inboxId: text("inbox_id"),
    metadata: text("metadata", { mode: "json" }).$type<Record<string, unknown>>().notNull(),
    requestId: text("request_id"),
    createdAt: integer("created_at").notNull(),
    /**
     * Key version 0 (entries written before migration 0017): the row's own unkeyed SHA-256 link.
     * Later entries store "" here: their links are in `audit_chain`, written after the commit.
     */
    prevHash: text("prev_hash").notNull(),
    hash: text("hash").notNull(),
    /** 0: legacy SHA-256 chain in the row; 1: HMAC-SHA256 with AUDIT_HMAC_KEY (`mac` + `audit_chain`). */
    keyVersion: integer("key_version").notNull().default(0),
    /**
     * HMAC of the entry's own fields (not its position), computed before the commit: the chainer
     * links only entries whose mac verifies, so a row forged into D1 without the key is never chained.
     */
    mac: text("mac"),
  },
  (t) => [
    uniqueIndex("audit_log_account_seq_uq").on(t.accountId, t.seq),
    index("audit_log_account_id_idx").on(t.accountId, t.id),
    index("audit_log_account_action_idx").on(t.accountId, t.action, t.id),
  ],
);

/**
 * The account's hash chain over `audit_log`, one row per entry, in `seq` order: written after
 * the entry's commit by a deterministic chaining step (INSERT OR IGNORE, so concurrent chainers
 * write identical rows and nothing is ever updated). Triggers refuse UPDATE and DELETE.
 */
export const auditChain = sqliteTable(
  "audit_chain",
  {
    accountId: text("account_id").notNull(),
    seq: integer("seq").notNull(),
    entryId: text("entry_id").notNull(),
    prevHash: text("prev_hash").notNull(),
    hash: text("hash").notNull(),
  },
  (t) => [primaryKey({ columns: [t.accountId, t.seq] })],
);

export const idempotencyKeys = sqliteTable(
  "idempotency_keys",
  {
    id: text("id").primaryKey(),
    /** SHA-256 of `scope:Idempotency-Key`; the key itself is not stored. */
    lookup: text("lookup").notNull(),
    accountId: text("account_id"),
    method: text("method").notNull(),
    path: text("path").notNull(),
    requestHash: text("request_hash").notNull(),
    state: text("state", { enum: ["pending", "done"] }).notNull(),
    statusCode: integer("status_code"),
    /** The first response, AES-GCM sealed under a key derived from the Idempotency-Key (it may hold a new API key). */
    responseSealed: text("response_sealed"),
    createdAt: integer("created_at").notNull(),
    expiresAt: integer("expires_at").notNull(),
  },
  (t) => [
    uniqueIndex("idempotency_keys_lookup_uq").on(t.lookup),
    index("idempotency_keys_expires_idx").on(t.expiresAt),
  ],
);

/** Attachment metadata as it appears on a message (denormalised so lists need no join). */
/** An inbox's screening policy; missing fields take the defaults (flag, 5 automatic replies per thread per hour). */
export interface InboxScreeningPolicy {
  mode?: "flag" | "quarantine" | "reject";
  auto_reply_limit?: number;
}

export interface SenderRules {
  allow: string[];
  block: string[];
}

/** The stored screening of an inbound message (the wire shape, see features/screening). */
export interface Screening {
  verdict: "clean" | "suspicious" | "dangerous";
  score: number;
  signals: { id: string; evidence: string; weight: number }[];
  screened_at: string;
  version: string;
}

export interface AttachmentMeta {
  id: string;
  filename: string | null;
  content_type: string;
  size: number;
  content_id: string | null;
  disposition: "attachment" | "inline";
}

/** A recipient a send left out, and why. */
export interface DroppedRecipient {
  address: string;
  reason: string;
}

/**
 * Outbound: where one recipient's copy stands. `accepted` (our inbox or the transport took it),
 * `refused` (refused for good), `failed` (still refused transiently when the retries ran out).
 * A recipient with no entry is still pending.
 */
export interface RecipientProgress {
  state: "accepted" | "refused" | "failed";
  /** Accepted by one of our own inboxes (not a send for the reputation). */
  internal?: boolean;
  code?: string;
  message?: string;
  /** The refusal is the recipient's bounce (see RecipientFailure.bounce). */
  bounce?: boolean;
  at: number;
}

export const threads = sqliteTable(
  "threads",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id").notNull(),
    inboxId: text("inbox_id").notNull(),
    subject: text("subject"),
    /** Subject with Re:/Fwd: prefixes removed, lower-cased: the subject-fallback threading key. */
    subjectKey: text("subject_key"),
    participants: text("participants", { mode: "json" }).$type<string[]>().notNull(),
    messageCount: integer("message_count").notNull(),
    lastMessageAt: integer("last_message_at").notNull(),
    labels: text("labels", { mode: "json" }).$type<string[]>().notNull(),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [
    index("threads_inbox_last_idx").on(t.inboxId, t.lastMessageAt, t.id),
    index("threads_inbox_subject_idx").on(t.inboxId, t.subjectKey, t.lastMessageAt),
  ],
);

export const messages = sqliteTable(
  "messages",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id").notNull(),
    inboxId: text("inbox_id").notNull(),
    threadId: text("thread_id").notNull(),
    direction: text("direction", { enum: ["inbound", "outbound"] }).notNull(),
    status: text("status").notNull(),
    fromAddress: text("from_address"),
    fromName: text("from_name"),
    to: text("to", { mode: "json" }).$type<string[]>().notNull(),
    cc: text("cc", { mode: "json" }).$type<string[]>().notNull(),
    bcc: text("bcc", { mode: "json" }).$type<string[]>().notNull(),
    replyTo: text("reply_to"),
    subject: text("subject"),
    /** Bodies up to BODY_INLINE_LIMIT bytes live here; larger ones in R2 (`*_key`), so a row stays under D1's 2 MB. */
    bodyText: text("body_text"),
    bodyHtml: text("body_html"),
    bodyTextKey: text("body_text_key"),
    bodyHtmlKey: text("body_html_key"),
    headers: text("headers", { mode: "json" }).$type<Record<string, string | string[]>>().notNull(),
    headersTruncated: integer("headers_truncated", { mode: "boolean" }).notNull().default(false),
    rfcMessageId: text("rfc_message_id"),
    inReplyTo: text("in_reply_to"),
    references: text("references", { mode: "json" }).$type<string[]>().notNull(),
    labels: text("labels", { mode: "json" }).$type<string[]>().notNull(),
    attachments: text("attachments", { mode: "json" }).$type<AttachmentMeta[]>().notNull(),
    size: integer("size").notNull(),
    authentication: text("authentication", { mode: "json" }).$type<AuthVerdicts | null>(),
    /** Inbound: the screener's verdict (null for outbound mail and mail stored before screening). */
    screening: text("screening", { mode: "json" }).$type<Screening | null>(),
    /** Auto-Submitted / Precedence / report marker, so agents can avoid reply loops. */
    autoSubmitted: text("auto_submitted"),
    /** "delivery_status" | "feedback" when the message is a DSN or an ARF report. */
    reportType: text("report_type"),
    parseError: text("parse_error"),
    envelopeFrom: text("envelope_from"),
    envelopeTo: text("envelope_to"),
    rawKey: text("raw_key").notNull(),
    /** Message-ID, or `sha256:<raw>` when there is none: a redelivery of the same mail matches it. */
    dedupeKey: text("dedupe_key").notNull(),
    /** Plain text the full-text index reads: subject is separate, this is the body (capped). */
    searchText: text("search_text").notNull(),
    searchAddresses: text("search_addresses").notNull(),
    /**
     * The first PREVIEW_CHARS characters of the text (whitespace folded), written with the row so
     * message lists never read or ship bodies (migration 0019 backfilled older rows).
     */
    preview: text("preview").notNull().default(""),
    complainedAt: integer("complained_at"),
    /** Outbound: recipients left out at acceptance, with why (`[{ address, reason }]`, e.g. suppressed). */
    droppedRecipients: text("dropped_recipients", { mode: "json" }).$type<DroppedRecipient[]>(),
    /**
     * Outbound: recipient → the bounce address (envelope sender) its copy leaves with, carrying an
     * HMAC token over (message, recipient). Empty when the transport owns the envelope (Cloudflare).
     */
    bounceAddresses: text("bounce_addresses", { mode: "json" }).$type<Record<string, string>>(),
    /**
     * Outbound: recipient → how its copy ended, written as each copy is accepted or refused, so
     * a retry (or a redelivery after a crash) sends only to the recipients still pending.
     */
    deliveryProgress: text("delivery_progress", { mode: "json" }).$type<Record<string, RecipientProgress>>(),
    /** Outbound: delivery attempts made by the queue consumer. */
    attempts: integer("attempts").notNull().default(0),
    /** Outbound: why the last attempt failed (a permanent failure's reason stays here). */
    lastError: text("last_error"),
    /** Outbound: a consumer holds the send until then; another delivery of the queue message waits. */
    leaseUntil: integer("lease_until"),
    /** Outbound: the id the transport gave the message (Cloudflare's Message-ID, the SMTP queue id). */
    providerMessageId: text("provider_message_id"),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
    sentAt: integer("sent_at"),
    receivedAt: integer("received_at"),
  },
  (t) => [
    index("messages_inbox_id_idx").on(t.inboxId, t.id),
    index("messages_inbox_direction_idx").on(t.inboxId, t.direction, t.id),
    index("messages_thread_idx").on(t.threadId, t.id),
    uniqueIndex("messages_inbox_dedupe_uq").on(t.inboxId, t.dedupeKey),
    index("messages_inbox_rfc_idx").on(t.inboxId, t.rfcMessageId),
    index("messages_account_rfc_idx").on(t.accountId, t.rfcMessageId),
    // The scheduled sweep looks for sends whose queue message was lost: only queued rows are indexed.
    index("messages_queued_idx").on(t.updatedAt).where(sql`${t.status} = 'queued'`),
    // Usage counts an account's messages by day.
    index("messages_account_created_idx").on(t.accountId, t.createdAt),
    // The phishing scorer asks, per send, which recipients have ever written to the account
    // (send-policy.ts knownSendersQuery). The query must repeat `lower(from_address)` and imply
    // `direction = 'inbound'` for SQLite to use this partial index.
    index("messages_account_inbound_from_idx")
      .on(t.accountId, sql`lower(${t.fromAddress})`)
      .where(sql`direction = 'inbound'`),
  ],
);

export const attachments = sqliteTable(
  "attachments",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id").notNull(),
    inboxId: text("inbox_id").notNull(),
    messageId: text("message_id").notNull(),
    filename: text("filename"),
    contentType: text("content_type").notNull(),
    size: integer("size").notNull(),
    contentId: text("content_id"),
    disposition: text("disposition", { enum: ["attachment", "inline"] }).notNull(),
    r2Key: text("r2_key").notNull(),
    sha256: text("sha256").notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [index("attachments_message_idx").on(t.messageId)],
);

/** Bounces, delays, delivery confirmations and complaints found in inbound DSN / ARF reports. */
export const deliveryReports = sqliteTable(
  "delivery_reports",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id").notNull(),
    inboxId: text("inbox_id").notNull(),
    /**
     * What carried the finding: the inbound DSN/ARF message (`source` report), the outbound
     * message itself (transport: refused while sending) or the relay event's `rev_…` id (relay).
     */
    reportMessageId: text("report_message_id").notNull(),
    /** Our outbound message it is about, when it could be linked. */
    originalMessageId: text("original_message_id"),
    originalRfcMessageId: text("original_rfc_message_id"),
    kind: text("kind", { enum: ["bounce", "delay", "delivered", "complaint"] }).notNull(),
    bounceType: text("bounce_type", { enum: ["hard", "soft"] }),
    recipient: text("recipient"),
    statusCode: text("status_code"),
    diagnostic: text("diagnostic"),
    feedbackType: text("feedback_type"),
    /** `report` (a DSN/ARF mail), `transport` (refused while sending) or `relay` (POST /webhooks/inbound/events). */
    source: text("source", { enum: ["report", "transport", "relay"] })
      .notNull()
      .default("report"),
    createdAt: integer("created_at").notNull(),
    /**
     * `kind:bounce_type:recipient` of a finding linked to `original_message_id` (null when not
     * linked): with the unique index below, the claim that makes each finding count once.
     */
    claimKey: text("claim_key"),
    /**
     * A claim inserted ahead of its batch (status, suppression, event): cleared by that batch. A
     * claim still pending after CLAIM_STALE_MS lost its batch (a crash between the two) and is
     * released by the sweep, so a redelivered report counts.
     */
    claimPending: integer("claim_pending", { mode: "boolean" }).notNull().default(false),
    /**
     * Whether the finding came from a source that may speak for its recipient (a DSN at that
     * recipient's bounce address, a feedback-loop source, the signed relay, our transport). An
     * unverified finding is kept and shown, and changes nothing.
     */
    verified: integer("verified", { mode: "boolean" }).notNull().default(true),
    /** Why it was not believed (`no_bounce_token`, `invalid_bounce_token`, `not_feedback_loop_source`, …). */
    unverifiedReason: text("unverified_reason"),
  },
  (t) => [
    index("delivery_reports_original_idx").on(t.originalMessageId),
    index("delivery_reports_account_idx").on(t.accountId, t.id),
    /**
     * The claim of a linked finding: one row per (message, kind, bounce type, recipient), so a
     * report seen twice (DSN and relay, concurrently) is counted, evented and audited once.
     */
    uniqueIndex("delivery_reports_claim_uq").on(t.originalMessageId, t.claimKey),
    index("delivery_reports_claim_pending_idx").on(t.claimPending, t.createdAt),
  ],
);

/** The account's event log: written once here, delivered by webhooks, long-poll and the dashboard. */
export const events = sqliteTable(
  "events",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id").notNull(),
    type: text("type").notNull(),
    inboxId: text("inbox_id"),
    threadId: text("thread_id"),
    messageId: text("message_id"),
    data: text("data", { mode: "json" }).$type<Record<string, unknown>>().notNull(),
    createdAt: integer("created_at").notNull(),
    /**
     * Per-account commit order, assigned inside the inserting statement. Ids are minted when a
     * change starts and may commit out of order; `GET /v1/events?after=` pages by this so an
     * agent paging forward never skips an event that committed late.
     */
    seq: integer("seq"),
    /** When webhook fan-out ran for this event; null rows are picked up by the cron sweep. */
    dispatchedAt: integer("dispatched_at"),
  },
  (t) => [
    index("events_account_idx").on(t.accountId, t.id),
    index("events_account_type_idx").on(t.accountId, t.type, t.id),
    uniqueIndex("events_account_seq_uq").on(t.accountId, t.seq),
    index("events_undispatched_idx").on(t.createdAt).where(sql`dispatched_at IS NULL`),
  ],
);

/** A customer's webhook endpoint. Soft-deleted so in-flight deliveries see it is gone. */
export const webhookEndpoints = sqliteTable(
  "webhook_endpoints",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id").notNull(),
    url: text("url").notNull(),
    /** Event types delivered; `["*"]` is every type. */
    events: text("events", { mode: "json" }).$type<string[]>().notNull(),
    inboxId: text("inbox_id"),
    description: text("description"),
    enabled: integer("enabled", { mode: "boolean" }).notNull(),
    /** Why it was disabled: `manual`, `gone` (the receiver answered 410). */
    disabledReason: text("disabled_reason"),
    /** The signing secret (`whsec_…`), sealed when WEBHOOK_ENCRYPTION_KEY is set (see signing.ts). */
    secret: text("secret").notNull(),
    /** The secret before the last rotation; it keeps signing until `previous_secret_expires_at`. */
    previousSecret: text("previous_secret"),
    previousSecretExpiresAt: integer("previous_secret_expires_at"),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
    deletedAt: integer("deleted_at"),
  },
  (t) => [index("webhook_endpoints_account_idx").on(t.accountId, t.id)],
);

/**
 * One event to deliver to one endpoint (fan-out, a test, or a replay): the retry state machine.
 * The queue carries only this id; the state lives here so it survives redeploys and redelivery.
 */
export const webhookDispatches = sqliteTable(
  "webhook_dispatches",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id").notNull(),
    endpointId: text("endpoint_id").notNull(),
    eventId: text("event_id").notNull(),
    kind: text("kind", { enum: ["event", "test", "replay"] }).notNull(),
    /** A replay's `target_url`; null means the endpoint's own URL. */
    targetUrl: text("target_url"),
    status: text("status", { enum: ["pending", "succeeded", "failed", "cancelled"] }).notNull(),
    attempts: integer("attempts").notNull(),
    nextAttemptAt: integer("next_attempt_at").notNull(),
    /** A consumer holding this until then is mid-attempt; a redelivered copy must not send too. */
    leaseUntil: integer("lease_until"),
    lastStatusCode: integer("last_status_code"),
    lastError: text("last_error"),
    /** `<endpoint>:<event>` for fan-out, so publishing twice creates one dispatch. */
    dedupeKey: text("dedupe_key"),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
    completedAt: integer("completed_at"),
  },
  (t) => [
    uniqueIndex("webhook_dispatches_dedupe_uq").on(t.dedupeKey),
    index("webhook_dispatches_pending_idx").on(t.nextAttemptAt).where(sql`status = 'pending'`),
    index("webhook_dispatches_event_idx").on(t.eventId),
  ],
);

/** One HTTP attempt (`dlv_…`), the rows of `GET /v1/webhooks/:id/deliveries`. */
export const webhookDeliveries = sqliteTable(
  "webhook_deliveries",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id").notNull(),
    endpointId: text("endpoint_id").notNull(),
    dispatchId: text("dispatch_id").notNull(),
    eventId: text("event_id").notNull(),
    eventType: text("event_type").notNull(),
    attempt: integer("attempt").notNull(),
    url: text("url").notNull(),
    statusCode: integer("status_code"),
    error: text("error"),
    durationMs: integer("duration_ms").notNull(),
    /** `succeeded`, `retrying` (another attempt is scheduled) or `failed` (final). */
    outcome: text("outcome", { enum: ["succeeded", "retrying", "failed"] }).notNull(),
    nextAttemptAt: integer("next_attempt_at"),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [
    index("webhook_deliveries_endpoint_idx").on(t.accountId, t.endpointId, t.id),
    uniqueIndex("webhook_deliveries_attempt_uq").on(t.dispatchId, t.attempt),
  ],
);

/**
 * Signatures the relay endpoint has accepted, kept past the 5-minute window. The signature covers
 * the body only (API.md), so this is what stops a captured request from being replayed to
 * another recipient: one signature, one `to`.
 */
export const relaySignatures = sqliteTable(
  "relay_signatures",
  {
    /** SHA-256 of the signature header value. */
    signatureHash: text("signature_hash").primaryKey(),
    envelopeTo: text("envelope_to").notNull(),
    expiresAt: integer("expires_at").notNull(),
  },
  (t) => [index("relay_signatures_expires_idx").on(t.expiresAt)],
);

/**
 * Addresses an account no longer sends to: hard-bounced or complained recipients (added by the
 * reputation feature), removed by the account through `DELETE /v1/suppressions/:address`.
 */
export const suppressions = sqliteTable(
  "suppressions",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id").notNull(),
    /** Lower-case bare address. */
    address: text("address").notNull(),
    reason: text("reason", { enum: ["hard_bounce", "complaint"] }).notNull(),
    /** Where the fact came from: `report` (DSN/ARF), `transport` (refused at send), `relay`. */
    source: text("source").notNull(),
    inboxId: text("inbox_id"),
    /** The outbound message that bounced or drew the complaint. */
    messageId: text("message_id"),
    detail: text("detail"),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [
    uniqueIndex("suppressions_account_address_uq").on(t.accountId, t.address),
    index("suppressions_account_idx").on(t.accountId, t.id),
  ],
);

/**
 * Reputation counter inputs whose InboxCounter call failed after their facts were committed in
 * D1. The 5-minute sweep re-applies them (the counter's idempotency keys make that safe) and
 * deletes the row once the counter took them.
 */
export const reputationPending = sqliteTable(
  "reputation_pending",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id").notNull(),
    inboxId: text("inbox_id").notNull(),
    /** The counter signals (`{ metric, n?, key? }`) as they were to be applied. */
    signals: text("signals", { mode: "json" })
      .$type<
        { metric: "sent" | "bounced_hard" | "bounced_soft" | "complained" | "received"; n?: number; key?: string }[]
      >()
      .notNull(),
    attempts: integer("attempts").notNull().default(0),
    lastError: text("last_error"),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [index("reputation_pending_created_idx").on(t.createdAt)],
);

export type AccountRow = typeof accounts.$inferSelect;
export type ApiKeyRow = typeof apiKeys.$inferSelect;
export type InboxRow = typeof inboxes.$inferSelect;
export type AuditRow = typeof auditLog.$inferSelect;
export type AuditChainRow = typeof auditChain.$inferSelect;
export type ThreadRow = typeof threads.$inferSelect;
export type MessageRow = typeof messages.$inferSelect;
export type AttachmentRow = typeof attachments.$inferSelect;
export type DeliveryReportRow = typeof deliveryReports.$inferSelect;
export type EventRow = typeof events.$inferSelect;
export type WebhookEndpointRow = typeof webhookEndpoints.$inferSelect;
export type WebhookDispatchRow = typeof webhookDispatches.$inferSelect;
export type WebhookDeliveryRow = typeof webhookDeliveries.$inferSelect;
export type SuppressionRow = typeof suppressions.$inferSelect;

/**
 * A sending domain of an account (`dom_…`). The DKIM private key (selector `default`) is kept
 * sealed under DKIM_ENCRYPTION_KEY; the public key stays in clear because the pre-send gate
 * compares it with DNS on every send and must not pay for a decryption to do so.
 */
export const domains = sqliteTable(
  "domains",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id").notNull(),
    /** Lower-case, no trailing dot. */
    domain: text("domain").notNull(),
    status: text("status", { enum: ["pending", "verified"] }).notNull(),
    dkimSelector: text("dkim_selector").notNull(),
    /** base64 SubjectPublicKeyInfo: the `p=` of the DKIM TXT record. */
    dkimPublicKey: text("dkim_public_key").notNull(),
    /** PKCS#8 private key, AES-GCM sealed (lib/crypto sealText) under DKIM_ENCRYPTION_KEY. */
    dkimPrivateKeySealed: text("dkim_private_key_sealed").notNull(),
    spfVerified: integer("spf_verified", { mode: "boolean" }).notNull().default(false),
    dkimVerified: integer("dkim_verified", { mode: "boolean" }).notNull().default(false),
    dmarcVerified: integer("dmarc_verified", { mode: "boolean" }).notNull().default(false),
    mxVerified: integer("mx_verified", { mode: "boolean" }).notNull().default(false),
    lastCheckedAt: integer("last_checked_at"),
    verifiedAt: integer("verified_at"),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [
    index("domains_account_idx").on(t.accountId, t.id),
    uniqueIndex("domains_account_domain_uq").on(t.accountId, t.domain),
    // At most one account holds a domain verified: a second claim is refused (409) at verify.
    uniqueIndex("domains_verified_uq").on(t.domain).where(sql`status = 'verified'`),
  ],
);

/**
 * Recent sends by body fingerprint, for the phishing scorer's "same body sprayed to many new
 * recipients" signal. Rows older than the window are useless and are swept by `scheduled()`
 * (sweepSendFingerprints, on the created_at index).
 */
export const sendFingerprints = sqliteTable(
  "send_fingerprints",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id").notNull(),
    /** SHA-256 of the normalised text body. */
    bodyHash: text("body_hash").notNull(),
    /** Recipients of this send that had never written to the account (lower-case). */
    newRecipients: text("new_recipients", { mode: "json" }).$type<string[]>().notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [
    index("send_fingerprints_lookup_idx").on(t.accountId, t.bodyHash, t.createdAt),
    index("send_fingerprints_created_idx").on(t.createdAt),
  ],
);

export type DomainRow = typeof domains.$inferSelect;
export type SendFingerprintRow = typeof sendFingerprints.$inferSelect;

export type { AuthVerdicts };

/**
 * Dashboard sign-ins (issue 19). The browser holds only a random session token in an HttpOnly
 * cookie; this row holds its SHA-256, the key it was exchanged for (never the key itself) and a
 * server-side expiry. An operator session (ADMIN_TOKEN) has no account and no key.
 */
export const dashboardSessions = sqliteTable(
  "dashboard_sessions",
  {
    id: text("id").primaryKey(),
    tokenHash: text("token_hash").notNull(),
    kind: text("kind", { enum: ["account", "operator"] }).notNull(),
    accountId: text("account_id"),
    keyId: text("key_id"),
    createdAt: integer("created_at").notNull(),
    expiresAt: integer("expires_at").notNull(),
  },
  (t) => [
    uniqueIndex("dashboard_sessions_token_uq").on(t.tokenHash),
    index("dashboard_sessions_expires_idx").on(t.expiresAt),
  ],
);

export type DashboardSessionRow = typeof dashboardSessions.$inferSelect;

/**
 * Always empty: creating batches end with an insert here that a trigger refuses when a
 * per-account limit would be exceeded (db/sql.ts `abortIfOver`, migrations/0013_hardening.sql).
 */
export const limitGuard = sqliteTable("limit_guard", { name: text("name").notNull() });
