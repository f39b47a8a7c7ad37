import { drizzle } from "drizzle-orm/d1";
import { currentD1Stats, meteredD1 } from "./metering";
import * as schema from "./schema";

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

/** A drizzle handle over D1; cheap, made per request. In development its reads are counted (d1-stats). */
export function createDb(d1: D1Handle) {
  const stats = currentD1Stats();
  const db = asDatabase(d1);
  return drizzle(stats ? meteredD1(db, stats) : db, { schema });
}

export type Db = ReturnType<typeof createDb>;
