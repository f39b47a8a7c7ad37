// A Worker for bench/inbound.mjs: calls mailbot's receiveMail() directly in workerd (no HTTP
// routing, no wrangler email harness, no proxy hop), with the local D1 and R2 simulators behind
// timing wrappers, so one message's cost splits into D1 wait, R2 wait and the rest (JS on the
// isolate: parse, hashing, drizzle, JSON). Single stream, so nothing else shares the isolate.
// POST /init   {"migrations": ["<sql>", …], "address": "…"}   → creates the schema, an account, an inbox
// POST /receive?to=<address>   body: the raw message  → { ms, d1_ms, r2_ms, do_ms, storage_ms, d1_calls, r2_calls, do_calls }
// POST /parse   body: the raw message  → a bare postal-mime parse with parseMail's options, in the
//   same isolate as the pipeline (the ratio's denominator), → { attachments }
import PostalMime from "postal-mime";
import { receiveMail } from "../src/features/inbound/inbound.service.ts";
import { systemContext } from "../src/lib/context.ts";
import { PARSE_OPTIONS } from "../src/mail/parse.ts";

// The Durable Objects receiveMail reaches (the audit anchor, the account's event hub, the inbox
// counters), so their calls cost here what they cost in wrangler dev.
export { AuditAnchor } from "../src/durable-objects/audit-anchor.ts";
export { EventHub } from "../src/durable-objects/event-hub.ts";
export { InboxCounter } from "../src/durable-objects/inbox-counter.ts";

// Wall time during which at least one D1 (or R2, or either) call was pending: overlapping calls
// (the attachments are stored in parallel) count once, so `ms - any` is time spent on the isolate.
const clock = {};
const pending = { d1: 0, r2: 0, do: 0, any: 0 };
const since = {};

function reset() {
  Object.assign(clock, { d1: 0, r2: 0, do: 0, any: 0, d1Calls: 0, r2Calls: 0, doCalls: 0 });
}

function begin(kind) {
  if (pending[kind]++ === 0) since[kind] = performance.now();
}

function end(kind) {
  if (--pending[kind] === 0) clock[kind] += performance.now() - since[kind];
}

async function time(kind, promise) {
  begin(kind);
  begin("any");
  clock[`${kind}Calls`]++;
  try {
    return await promise;
  } finally {
    end(kind);
    end("any");
  }
}

function timedStatement(stmt) {
  return {
    inner: stmt,
    bind: (...values) => timedStatement(stmt.bind(...values)),
    run: () => time("d1", stmt.run()),
    all: () => time("d1", stmt.all()),
    raw: (options) => time("d1", stmt.raw(options)),
    first: (column) => time("d1", stmt.first(column)),
  };
}

function timedD1(db) {
  return {
    prepare: (sql) => timedStatement(db.prepare(sql)),
    batch: (statements) => time("d1", db.batch(statements.map((s) => s.inner ?? s))),
    exec: (sql) => time("d1", db.exec(sql)),
  };
}

function timedR2(bucket) {
  return {
    put: (...args) => time("r2", bucket.put(...args)),
    get: (...args) => time("r2", bucket.get(...args)),
    head: (...args) => time("r2", bucket.head(...args)),
    delete: (...args) => time("r2", bucket.delete(...args)),
  };
}

/**
 * A Durable Object namespace whose stubs' calls are timed as I/O: in production a call to an
 * object is a network round trip, and here (one workerd process) the object's own work would
 * otherwise be counted as the Worker's.
 */
function timedNamespace(ns) {
  const wrapStub = (stub) =>
    new Proxy(stub, {
      get(target, prop) {
        const value = Reflect.get(target, prop);
        if (typeof value !== "function") return value;
        // Reflect.apply, not value.apply: on an RPC stub `.apply` is itself a remote method name.
        return (...args) => time("do", Reflect.apply(value, target, args));
      },
    });
  return new Proxy(ns, {
    get(target, prop) {
      const value = Reflect.get(target, prop);
      if (typeof value !== "function") return value;
      if (prop === "get" || prop === "getByName") return (...args) => wrapStub(value.apply(target, args));
      return value.bind(target);
    },
  });
}

/**
 * The env with its bindings timed, built once: workerd hands every request of an isolate the same
 * env object, and what is cached per env (the parsed config, the drizzle handle per D1 binding)
 * must be cached here too, or each message would pay for a fresh config parse and handle.
 */
let timed = null;
function timedEnv(env) {
  timed ??= {
    ...env,
    DB: timedD1(env.DB),
    MAIL_BUCKET: timedR2(env.MAIL_BUCKET),
    AUDIT_ANCHOR: timedNamespace(env.AUDIT_ANCHOR),
    EVENT_HUB: timedNamespace(env.EVENT_HUB),
    INBOX_COUNTER: timedNamespace(env.INBOX_COUNTER),
  };
  return timed;
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/init") {
      const { migrations, address } = await request.json();
      for (const sql of migrations) await env.DB.prepare(sql).run();
      const now = Date.now();
      const [user, domain] = address.split("@");
      await env.DB.batch([
        env.DB.prepare(
          "INSERT INTO accounts (id, short_id, email, new_account_until, created_at, updated_at) VALUES ('acct_bench', 'bench1', 'bench@example.com', ?, ?, ?)",
        ).bind(now, now, now),
        env.DB.prepare(
          "INSERT INTO inboxes (id, account_id, username, domain, address, labels, created_at, updated_at) VALUES ('inbox_bench', 'acct_bench', ?, ?, ?, '[]', ?, ?)",
        ).bind(user, domain, address, now, now),
      ]);
      return Response.json({ ok: true });
    }
    const raw = new Uint8Array(await request.arrayBuffer());
    if (url.pathname === "/parse") {
      const email = await PostalMime.parse(raw, PARSE_OPTIONS);
      return Response.json({ attachments: email.attachments.length });
    }
    reset();
    const t0 = performance.now();
    const result = await receiveMail(systemContext(timedEnv(env)), {
      readRaw: async () => raw,
      envelopeFrom: "ada@sender.example.org",
      envelopeTo: url.searchParams.get("to"),
      via: "internal",
      requestId: null,
    });
    const ms = performance.now() - t0;
    return Response.json({
      outcome: result.outcome,
      ms,
      d1_ms: clock.d1,
      r2_ms: clock.r2,
      do_ms: clock.do,
      storage_ms: clock.any,
      d1_calls: clock.d1Calls,
      r2_calls: clock.r2Calls,
      do_calls: clock.doCalls,
    });
  },
};
