import { env } from "cloudflare:workers";
import { argon2id } from "hash-wasm";
import { createDb } from "../../src/db/client";
import { type AccountRow, type ApiKeyRow, accounts, apiKeys, inboxes } from "../../src/db/schema";
import { toAccountWire } from "../../src/features/accounts/accounts.service";
import { generateApiKey, toKeyWire } from "../../src/features/api-keys/api-keys.service";
import { KEY_PREFIX_LENGTH } from "../../src/features/api-keys/key-auth";
import { commitWithAudit } from "../../src/features/audit/audit.service";
import { publishEvents } from "../../src/features/events/events.service";
import { inboxEvent, newSharedInbox, toInboxWire } from "../../src/features/inboxes/inboxes.service";
// Side effect first: hands hash-wasm the precompiled Argon2 module (workerd forbids compiling it).
import "../../src/lib/argon2";
import type { ServiceContext } from "../../src/lib/context";
import { newId, randomBase32 } from "../../src/lib/ids";
import { NEW_ACCOUNT_PERIOD_MS } from "../../src/lib/tiers";

/**
 * Argon2id at the smallest cost hash-wasm accepts (8 KiB, 1 pass) instead of the production
 * 19 MiB / 2 passes. The hash is a normal PHC string, so the Worker verifies it through its
 * real path (`argon2Verify` reads the cost from the string), in microseconds instead of ~100 ms.
 */
async function cheapHash(secret: string): Promise<string> {
  return argon2id({
    password: secret,
    salt: crypto.getRandomValues(new Uint8Array(16)),
    memorySize: 8,
    iterations: 1,
    parallelism: 1,
    hashLength: 32,
    outputType: "encoded",
  });
}

/** A key row as `newKeyRow` builds it, but with the cheap hash. */
async function keyRowOf(
  accountId: string,
  input: { name: string; scopes?: string[]; inbox_ids?: string[] },
  now: number,
): Promise<{ row: ApiKeyRow; key: string }> {
  const key = generateApiKey();
  const row: ApiKeyRow = {
    id: newId("key", now),
    accountId,
    name: input.name,
    prefix: key.slice(0, KEY_PREFIX_LENGTH),
    keyHash: await cheapHash(key),
    scopes: [...new Set(input.scopes ?? ["full"])],
    inboxIds: input.inbox_ids ? [...new Set(input.inbox_ids)] : null,
    createdAt: now,
    lastUsedAt: null,
    revokedAt: null,
  };
  return { row, key };
}

export interface TestAccount {
  key: string;
  /** The id of `key` (not in the register answer; the factory knows it). */
  keyId: string;
  // biome-ignore lint/suspicious/noExplicitAny: the wire shapes of POST /v1/auth/register, read field by field
  account: any;
  // biome-ignore lint/suspicious/noExplicitAny: as above
  inbox: any;
}

let counter = 0;

/**
 * A fresh account with a full key and its sandbox inbox, as `POST /v1/auth/register` leaves
 * them (same rows, event and audit entries, same return shape), written straight to D1 with a
 * cheaply hashed key. Tests about registration itself use `registerAccount` (the real route).
 */
export async function createAccount(label = "user"): Promise<TestAccount> {
  counter++;
  const now = Date.now();
  const db = createDb(env.DB);
  const email = `${label}-${counter}-${crypto.randomUUID().slice(0, 8)}@example.com`;
  const account: AccountRow = {
    id: newId("acct", now),
    shortId: randomBase32(8),
    name: `${label} ${counter}`,
    email,
    tier: "sandbox",
    status: "active",
    newAccountUntil: now + NEW_ACCOUNT_PERIOD_MS,
    createdAt: now,
    updatedAt: now,
    deletedAt: null,
  };
  const { row: keyRow, key } = await keyRowOf(account.id, { name: "default" }, now);
  const inbox = newSharedInbox(account, env.MAIL_DOMAIN, { username: "sandbox" }, now);
  const ctx: ServiceContext = {
    accountId: account.id,
    actor: { type: "system", id: null },
    requestId: newId("req", now),
    db,
    env,
    now: () => now,
  };
  const event = inboxEvent(ctx, "inbox.created", inbox);
  await commitWithAudit(
    ctx,
    [
      db.insert(accounts).values(account),
      db.insert(apiKeys).values(keyRow),
      db.insert(inboxes).values(inbox),
      event.statement,
    ],
    [
      {
        action: "account.created",
        target: { type: "account", id: account.id },
        metadata: { email, tier: account.tier },
      },
      {
        action: "api_key.created",
        target: { type: "api_key", id: keyRow.id },
        metadata: { name: keyRow.name, prefix: keyRow.prefix, scopes: keyRow.scopes, inbox_ids: null },
      },
      {
        action: "inbox.created",
        target: { type: "inbox", id: inbox.id },
        inboxId: inbox.id,
        metadata: { address: inbox.address, event_id: event.id },
      },
    ],
  );
  await publishEvents(env, [event.id]);
  // Through JSON, like the route's answer (no undefined fields, ISO strings).
  return JSON.parse(
    JSON.stringify({ key, keyId: keyRow.id, account: toAccountWire(account, env), inbox: toInboxWire(inbox) }),
  );
}

/**
 * Another key of the account, as `POST /v1/api-keys` makes it (row and audit entry; the answer's
 * wire shape with the key), with the cheap hash. Tests about the key routes use the route.
 */
export async function createKey(
  owner: Pick<TestAccount, "account" | "keyId">,
  input: { name: string; scopes?: string[]; inbox_ids?: string[] },
) {
  const now = Date.now();
  const db = createDb(env.DB);
  const { row, key } = await keyRowOf(owner.account.id, input, now);
  const ctx: ServiceContext = {
    accountId: owner.account.id,
    actor: { type: "api_key", id: owner.keyId },
    requestId: newId("req", now),
    db,
    env,
    now: () => now,
  };
  await commitWithAudit(
    ctx,
    [db.insert(apiKeys).values(row)],
    [
      {
        action: "api_key.created",
        target: { type: "api_key", id: row.id },
        metadata: { name: row.name, prefix: row.prefix, scopes: row.scopes, inbox_ids: row.inboxIds },
      },
    ],
  );
  return { ...toKeyWire(row), key };
}
