import { waitUntil } from "cloudflare:workers";
import { and, asc, desc, eq, gt, lte, sql } from "drizzle-orm";
import { auditHmacKey } from "../../config";
import { createDb, type Db } from "../../db/client";
import { insertRow, runBatch } from "../../db/compiled";
import { type AuditChainRow, type AuditRow, auditChain, auditLog } from "../../db/schema";
import { auditAnchor } from "../../durable-objects/audit-anchor.client";
import type { Bindings } from "../../env";
import { track } from "../../lib/background";
import type { BaseContext } from "../../lib/context";
import { sha256Hex, toHex } from "../../lib/crypto";
import { newId } from "../../lib/ids";
import { log } from "../../lib/log";

/**
 * The account's audit chain, kept apart from the entries so that appending needs no lock:
 *
 * 1. A writer inserts its entry in the same `db.batch` as its change, with `seq` computed by the
 *    INSERT itself (`MAX(seq) + 1` of the account, evaluated inside the batch's transaction, and
 *    D1 runs one transaction at a time), so there is no read-modify-write to race and the chain
 *    order is the commit order. The entry carries `mac`: an HMAC of its own fields, computable
 *    before its position is known.
 * 2. Right after the commit the writer starts `chainAccount` in the background: it reads the account's last link and
 *    the entries after it, checks each entry's mac, and appends one `audit_chain` row per entry
 *    (`hash` = HMAC(key, version, account, seq, entry id, mac, previous hash)) with INSERT OR
 *    IGNORE. The step is deterministic, so concurrent chainers write identical rows, and nothing
 *    is ever updated. The scheduled sweep, the audit list and `/verify` run it again for anything
 *    a crash left unchained.
 * 3. The chainer reports the new head to the account's AuditAnchor Durable Object, outside D1:
 *    `/verify` compares the chain with it, so cutting the newest entries and their links off the
 *    end (which needs dropping the triggers) is noticed too.
 */

export const GENESIS_HASH = "0".repeat(64);
/** The key version new entries are written with (0 is the unkeyed SHA-256 chain before 0017). */
export const CURRENT_KEY_VERSION = 1;
/** Entries chained per read-and-insert round. */
const CHAIN_PAGE = 200;

const encoder = new TextEncoder();
const keys = new Map<string, Promise<CryptoKey>>();

function hmacKey(secret: string): Promise<CryptoKey> {
  let key = keys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    keys.set(secret, key);
  }
  return key;
}

async function hmacHex(secret: string, text: string): Promise<string> {
  return toHex(await crypto.subtle.sign("HMAC", await hmacKey(secret), encoder.encode(text)));
}

/** The fields of an entry that its mac covers: everything but its position and its links. */
export type EntryFields = Pick<
  AuditRow,
  | "id"
  | "accountId"
  | "action"
  | "actorType"
  | "actorId"
  | "targetType"
  | "targetId"
  | "inboxId"
  | "metadata"
  | "requestId"
  | "createdAt"
  | "keyVersion"
>;

/** HMAC of an entry's own fields (key version 1). */
export function entryMac(secret: string, e: EntryFields): Promise<string> {
  return hmacHex(
    secret,
    JSON.stringify([
      "mailbot-audit-entry",
      e.keyVersion,
      e.id,
      e.accountId,
      e.action,
      e.actorType,
      e.actorId,
      e.targetType,
      e.targetId,
      e.inboxId,
      e.metadata,
      e.requestId,
      e.createdAt,
    ]),
  );
}

/** The link of a keyed entry: its position, its id and mac, and the previous link. */
function linkHash(secret: string, e: Pick<AuditRow, "accountId" | "seq" | "id">, mac: string, prevHash: string) {
  return hmacHex(secret, JSON.stringify(["mailbot-audit-link", 1, e.accountId, e.seq, e.id, mac, prevHash]));
}

/** Key version 0 (before migration 0017): unkeyed SHA-256 over every field and the previous hash. */
export async function legacyEntryHash(row: Omit<AuditRow, "hash" | "keyVersion" | "mac">): Promise<string> {
  return sha256Hex(
    JSON.stringify([
      row.id,
      row.accountId,
      row.seq,
      row.action,
      row.actorType,
      row.actorId,
      row.targetType,
      row.targetId,
      row.inboxId,
      row.metadata,
      row.requestId,
      row.createdAt,
      row.prevHash,
    ]),
  );
}

/**
 * The link an entry must have after `prevHash`, or null when the entry itself is not genuine
 * (a keyed entry whose mac does not verify, a legacy entry whose stored hash does not match).
 */
export async function expectedLink(secret: string, row: AuditRow, prevHash: string): Promise<string | null> {
  if (row.keyVersion === 0) {
    const { hash, keyVersion: _v, mac: _m, ...rest } = row;
    const intact = row.prevHash === prevHash && (await legacyEntryHash(rest)) === hash;
    return intact ? hash : null;
  }
  if (row.keyVersion !== CURRENT_KEY_VERSION || !row.mac) return null;
  if ((await entryMac(secret, row)) !== row.mac) return null;
  return linkHash(secret, row, row.mac, prevHash);
}

/**
 * Links the account's committed entries that have no chain row yet, up to `upTo` (default: all).
 * Stops at the first entry that is not genuine or not contiguous (it stays unchained, and
 * `/verify` names it). Returns how many links this call computed (some may have been written by a
 * concurrent chainer first; they are identical).
 */
export async function chainAccount(
  db: Db,
  env: Bindings,
  accountId: string,
  upTo = Number.MAX_SAFE_INTEGER,
): Promise<number> {
  const secret = auditHmacKey(env);
  let linked = 0;
  for (;;) {
    // The last link and the entries after it, in one round trip and one consistent read.
    const headSeq = sql`(SELECT COALESCE(MAX(${auditChain.seq}), 0) FROM ${auditChain} WHERE ${auditChain.accountId} = ${accountId})`;
    const [heads, rows] = await db.batch([
      db
        .select({ seq: auditChain.seq, hash: auditChain.hash })
        .from(auditChain)
        .where(eq(auditChain.accountId, accountId))
        .orderBy(desc(auditChain.seq))
        .limit(1),
      db
        .select()
        .from(auditLog)
        .where(and(eq(auditLog.accountId, accountId), gt(auditLog.seq, headSeq), lte(auditLog.seq, upTo)))
        .orderBy(asc(auditLog.seq))
        .limit(CHAIN_PAGE),
    ]);
    const head = heads[0] ?? { seq: 0, hash: GENESIS_HASH };
    if (head.seq >= upTo) break;
    const links: AuditChainRow[] = [];
    let prev = head;
    let stopped = false;
    for (const row of rows) {
      const hash = row.seq === prev.seq + 1 ? await expectedLink(secret, row, prev.hash) : null;
      if (hash === null) {
        log.error("audit entry not chained", { account_id: accountId, entry_id: row.id, seq: row.seq });
        stopped = true;
        break;
      }
      links.push({ accountId, seq: row.seq, entryId: row.id, prevHash: prev.hash, hash });
      prev = { seq: row.seq, hash };
    }
    if (links.length > 0) {
      await runBatch(
        db,
        links.map((l) => insertRow(auditChain, l, { onConflict: "ignore" })),
      );
      linked += links.length;
      // The head leaves D1 too, so a tail cut off later (entries and links) is still noticed.
      const last = links[links.length - 1] as AuditChainRow;
      await auditAnchor(env, accountId).advance({ seq: last.seq, hash: last.hash, entryId: last.entryId });
    }
    if (stopped || rows.length < CHAIN_PAGE) break;
  }
  return linked;
}

/**
 * Chains after a commit, in the background of the invocation (`waitUntil`), without failing the
 * caller: the change is committed; a sweep finishes the job if the invocation ends first. One
 * chainer per account per isolate: a writer that finds one running only raises its target, and
 * the running one goes round again, so a burst of writes on one account costs a few chaining
 * passes instead of one read, one insert and one anchor call per write.
 *
 * A chainer's life is bounded (CHAINER_PASSES passes, then it hands over): the runtime cuts
 * `waitUntil` work off some 30 s after the response, and a cut-off promise never settles, so a
 * chainer that kept going round under a steady stream of writes could otherwise be left
 * registered forever, with every later writer only raising its target. A registration older
 * than CHAINER_STALE_MS is treated as dead and replaced.
 */
export function chainAfterCommit(env: Bindings, upTo: Map<string, number>): void {
  const now = Date.now();
  for (const [accountId, seq] of upTo) {
    const running = chainers.get(accountId);
    if (running && now - running.startedAt < CHAINER_STALE_MS) {
      running.target = Math.max(running.target, seq);
      continue;
    }
    const state = { target: Math.max(seq, running?.target ?? 0), startedAt: now };
    chainers.set(accountId, state);
    const chaining = (async () => {
      try {
        // The binding, not the caller's session: chaining writes, and outlives the request.
        const db = createDb(env.DB);
        for (let pass = 0; pass < CHAINER_PASSES; pass++) {
          // A short wait before every pass, so a stream of writes on the account (mail arriving
          // one after another, an agent's sends) is linked in one pass instead of one read, one
          // insert and one anchor call per write; the entries written meanwhile only raise the
          // target. Under a steady stream a pass without the wait would find only the few
          // entries committed while the last one ran: at 100 sends a second on one account
          // that was a pass (two D1 batches and an anchor call) every few milliseconds.
          await scheduler.wait(CHAIN_COALESCE_MS);
          const target = state.target;
          chainerPasses.count++;
          await chainAccount(db, env, accountId, target);
          if (state.target === target) return;
        }
        // Still behind after its passes: stand down; the next writer starts a fresh chainer,
        // and one more pass here covers what was raised meanwhile.
        if (chainers.get(accountId) === state) chainers.delete(accountId);
        chainerPasses.count++;
        await chainAccount(db, env, accountId, state.target);
      } catch (err) {
        log.warn("audit chaining deferred to the sweep", { account_id: accountId, error: String(err) });
      } finally {
        if (chainers.get(accountId) === state) chainers.delete(accountId);
      }
    })();
    waitUntil(track(chaining));
  }
}

const chainers = new Map<string, { target: number; startedAt: number }>();
/** Passes the background chainers of this isolate have made (read by the tests, never reset here). */
export const chainerPasses = { count: 0 };
/** How long a chainer waits for more writes before each pass (well inside "seconds"). */
const CHAIN_COALESCE_MS = 100;
/** Passes one chainer makes before it hands over (each links everything committed so far). */
const CHAINER_PASSES = 8;
/** A chainer registered longer ago than this was cut off with its invocation: replace it. */
const CHAINER_STALE_MS = 10_000;

/** How far back the sweep looks for unchained entries (a crash between commit and chaining). */
const SWEEP_WINDOW_MS = 24 * 60 * 60 * 1000;

/** Scheduled sweep: chains every account with a recent entry that has no link. Returns links written. */
export async function sweepAuditChains(ctx: BaseContext): Promise<number> {
  // Entry ids are time-sortable, so the primary key bounds the scan to the last day.
  const since = newId("aud", ctx.now() - SWEEP_WINDOW_MS);
  const pending = await ctx.db
    .selectDistinct({ accountId: auditLog.accountId })
    .from(auditLog)
    .where(
      and(
        gt(auditLog.id, since),
        sql`NOT EXISTS (SELECT 1 FROM ${auditChain} WHERE ${auditChain.accountId} = ${auditLog.accountId} AND ${auditChain.seq} = ${auditLog.seq})`,
      ),
    )
    .limit(100)
    .all();
  let linked = 0;
  for (const { accountId } of pending) {
    try {
      linked += await chainAccount(ctx.db, ctx.env, accountId);
    } catch (err) {
      log.error("audit chain sweep failed for an account", { account_id: accountId, error: String(err) });
    }
  }
  return linked;
}

/** The links of some entries of one account, by seq (for the wire's hash and prev_hash). */
export async function linksOf(db: Db, accountId: string, seqs: number[]): Promise<Map<number, AuditChainRow>> {
  if (seqs.length === 0) return new Map();
  const rows = await db
    .select()
    .from(auditChain)
    .where(
      and(
        eq(auditChain.accountId, accountId),
        // One JSON parameter for the whole page (D1 binds at most 100 parameters).
        sql`${auditChain.seq} IN (SELECT value FROM json_each(${JSON.stringify(seqs)}))`,
      ),
    )
    .all();
  return new Map(rows.map((r) => [r.seq, r]));
}
