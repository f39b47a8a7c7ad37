import { index, integer, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

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
    prevHash: text("prev_hash").notNull(),
    hash: text("hash").notNull(),
  },
  (t) => [
    uniqueIndex("audit_log_account_seq_uq").on(t.accountId, t.seq),
    index("audit_log_account_id_idx").on(t.accountId, t.id),
    index("audit_log_account_action_idx").on(t.accountId, t.action, t.id),
  ],
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

export type AccountRow = typeof accounts.$inferSelect;
export type ApiKeyRow = typeof apiKeys.$inferSelect;
export type InboxRow = typeof inboxes.$inferSelect;
export type AuditRow = typeof auditLog.$inferSelect;
