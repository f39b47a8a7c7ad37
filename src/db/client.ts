import { drizzle } from "drizzle-orm/d1";
import { currentD1Stats, meteredD1 } from "./metering";

/** The database binding, or a D1 session of it (read replication: http/d1-session.ts). */
export type D1Handle = D1Database | D1DatabaseSession;

/**
 * A session seen as a database: drizzle only ever calls prepare() and batch(), which a session
 * has, so every query of a request runs in its session (sequentially consistent, on a replica
 * when one is fresh enough).
 */
function asDatabase(handle: D1Handle): D1Database {
  if (!("getBookmark" in handle)) return handle;
  const session = handle;
  return {
    prepare: (sql: string) => session.prepare(sql),
    batch: <T = unknown>(statements: D1PreparedStatement[]) => session.batch<T>(statements),
    exec: () => Promise.reject(new Error("exec() is not available on a D1 session")),
    withSession: () => {
      throw new Error("a D1 session cannot open another");
    },
    dump: () => Promise.reject(new Error("dump() is not available on a D1 session")),
  } as D1Database;
}

/**
 * Handles already made for a binding or session. Nothing here uses drizzle's relational queries
 * (`db.query.*`), so no schema is passed: building its relational config cost ~0.4 ms of CPU per
 * handle, and a mail made several handles. A handle holds no per-call state, so one per binding
 * (or session) is reused; a metered handle (development's d1-stats) is made per counter.
 */
const handles = new WeakMap<D1Handle, ReturnType<typeof drizzle>>();

/** A drizzle handle over D1. In development its reads are counted (d1-stats). */
export function createDb(d1: D1Handle) {
  const stats = currentD1Stats();
  if (stats) return drizzle(meteredD1(asDatabase(d1), stats));
  let db = handles.get(d1);
  if (!db) {
    db = drizzle(asDatabase(d1));
    handles.set(d1, db);
  }
  return db;
}

export type Db = ReturnType<typeof createDb>;

/**
 * A query built once per handle and run many times with placeholders (drizzle's `.prepare()`).
 * Building a drizzle query costs CPU on every call (the builder walks every selected column, with
 * an `instanceof`-and-prototype check each), and the inbound path runs the same few reads for
 * every mail: resolving the recipient alone (two whole rows) cost ~1 ms of CPU per mail, more
 * than parsing the message. The email() handler, queue consumers and Durable Objects use the
 * binding's handle, which lives as long as the isolate, so each query is built once per isolate;
 * a request's D1 session gets its own handle and builds them at most once per request.
 */
const preparedByHandle = new WeakMap<Db, Map<string, unknown>>();

export function prepared<T>(db: Db, name: string, build: (db: Db) => T): T {
  let byName = preparedByHandle.get(db);
  if (!byName) {
    byName = new Map();
    preparedByHandle.set(db, byName);
  }
  let query = byName.get(name) as T | undefined;
  if (query === undefined) {
    query = build(db);
    byName.set(name, query);
  }
  return query;
}
