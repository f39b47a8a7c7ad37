import { fillPlaceholders } from "drizzle-orm";
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

/** What `once` needs of a drizzle prepared query (drizzle's own batch uses the same methods). */
interface PreparedSelect {
  getQuery(): { sql: string; params: unknown[] };
  mapAllResult(rows: unknown): unknown;
  mapGetResult(row: unknown): unknown;
  all(...args: never[]): Promise<unknown>;
  get(...args: never[]): Promise<unknown>;
}

/** Builds nothing but SQL: `once` runs the statements on the caller's own handle. */
const template = drizzle({ prepare: () => null } as unknown as D1Database);

/**
 * A select built by drizzle ONCE, with placeholders, and run on any handle: the binding's, a
 * request's D1 session, development's metered one. Building a drizzle query costs CPU on every
 * call (the builder walks every selected column, with an `instanceof`-and-prototype check each),
 * and the hot paths run the same few reads for every mail and every send: resolving an inbound
 * recipient alone (two whole rows) cost ~1 ms of CPU per mail, more than parsing the message.
 * drizzle's own `.prepare()` ties a query to one handle, and every API request has its own D1
 * session, so the statement is kept as drizzle made it (its SQL, its parameters with their
 * placeholders, its row mapping) and bound to the caller's handle at run time, the way drizzle's
 * batch runs prepared queries.
 */
export function once<Q extends PreparedSelect>(build: (db: Db) => Q) {
  let query: Q | undefined;
  const run = async (db: Db, values: Record<string, unknown>): Promise<{ query: Q; rows: unknown[] }> => {
    query ??= build(template);
    const { sql, params } = query.getQuery();
    const rows = await (db.$client as D1Database)
      .prepare(sql)
      .bind(...fillPlaceholders(params, values))
      .raw();
    return { query, rows };
  };
  return {
    /** The statement as it would run with `values` (for EXPLAIN QUERY PLAN in tests). */
    statement(values: Record<string, unknown> = {}): { sql: string; params: unknown[] } {
      query ??= build(template);
      const { sql, params } = query.getQuery();
      return { sql, params: fillPlaceholders(params, values) };
    },
    async get(db: Db, values: Record<string, unknown> = {}): Promise<Awaited<ReturnType<Q["get"]>>> {
      const { query, rows } = await run(db, values);
      return (rows[0] === undefined ? undefined : query.mapGetResult(rows[0])) as Awaited<ReturnType<Q["get"]>>;
    },
    async all(db: Db, values: Record<string, unknown> = {}): Promise<Awaited<ReturnType<Q["all"]>>> {
      const { query, rows } = await run(db, values);
      return query.mapAllResult(rows) as Awaited<ReturnType<Q["all"]>>;
    },
  };
}
