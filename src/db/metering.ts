import { AsyncLocalStorage } from "node:async_hooks";

/**
 * Development-only D1 accounting: with ENVIRONMENT=development a request that asks for it
 * (`X-Mailbot-D1-Stats: 1`, http/d1-stats.ts) gets
 * `X-Mailbot-D1-Rows-Read` (sum of `meta.rows_read` over the request's statements) and
 * `X-Mailbot-D1-Queries`. Elsewhere the middleware only calls next() and createDb hands drizzle
 * the plain binding, so production pays one AsyncLocalStorage lookup per createDb.
 */
export interface D1Stats {
  queries: number;
  rowsRead: number;
  rowsWritten: number;
  /** Statements run without a meta to read (their rows are not in the sums). */
  unmetered: number;
}

const current = new AsyncLocalStorage<D1Stats>();

/** The running request's counter, or undefined when accounting is off. */
export function currentD1Stats(): D1Stats | undefined {
  return current.getStore();
}

/** Runs `fn` with a fresh counter that every createDb in it feeds (the HTTP middleware's seam). */
export async function withD1Stats<T>(fn: () => Promise<T>): Promise<{ result: T; stats: D1Stats }> {
  const stats: D1Stats = { queries: 0, rowsRead: 0, rowsWritten: 0, unmetered: 0 };
  const result = await current.run(stats, fn);
  return { result, stats };
}

function count(stats: D1Stats, result: { meta?: Partial<D1Meta> }): void {
  stats.queries++;
  const meta = result.meta;
  if (typeof meta?.rows_read === "number") {
    stats.rowsRead += meta.rows_read;
    stats.rowsWritten += meta.rows_written ?? 0;
  } else {
    stats.unmetered++;
  }
}

/** `returning "a", "t"."b"` with distinct column names: all() rows map back to raw() arrays. */
function plainReturning(sql: string): boolean {
  const list = /\sreturning\s+((?:"[^"]+"\.)?"[^"]+"(?:\s*,\s*(?:"[^"]+"\.)?"[^"]+")*)\s*;?\s*$/i.exec(sql)?.[1];
  if (!list) return false;
  const names = list.split(",").map((item) => item.trim().split(".").at(-1));
  return new Set(names).size === names.length;
}

/**
 * D1's raw() (drizzle's path for every select with fields) drops the result meta, so a metered
 * raw() runs all() instead and turns the row objects back into arrays. A select goes through
 * `select * from (…)`, where SQLite renames duplicate column names (joins: `id`, `id:1`), so no
 * cell is lost; SQLite flattens that subquery, so the plan and rows read are the original's.
 */
class MeteredStatement implements D1PreparedStatement {
  constructor(
    private readonly db: D1Database,
    private readonly stats: D1Stats,
    private readonly sql: string,
    readonly inner: D1PreparedStatement,
    private readonly values: unknown[] = [],
  ) {}

  bind(...values: unknown[]): D1PreparedStatement {
    return new MeteredStatement(this.db, this.stats, this.sql, this.inner.bind(...values), values);
  }

  async run<T = Record<string, unknown>>(): Promise<D1Result<T>> {
    const result = await this.inner.run<T>();
    count(this.stats, result);
    return result;
  }

  async all<T = Record<string, unknown>>(): Promise<D1Result<T>> {
    const result = await this.inner.all<T>();
    count(this.stats, result);
    return result;
  }

  first<T = unknown>(colName: string): Promise<T | null>;
  first<T = Record<string, unknown>>(): Promise<T | null>;
  async first<T>(colName?: string): Promise<T | null> {
    const row = (await this.all<Record<string, unknown>>()).results[0];
    if (!row) return null;
    if (colName === undefined) return row as T;
    if (!(colName in row)) throw new Error(`D1_COLUMN_NOTFOUND: Column not found (${colName})`);
    return row[colName] as T;
  }

  raw<T = unknown[]>(options: { columnNames: true }): Promise<[string[], ...T[]]>;
  raw<T = unknown[]>(options?: { columnNames?: false }): Promise<T[]>;
  async raw<T = unknown[]>(options?: { columnNames?: boolean }): Promise<T[] | [string[], ...T[]]> {
    if (options?.columnNames) {
      count(this.stats, {});
      return this.inner.raw<T>({ columnNames: true });
    }
    const select = /^\s*(select|with)\b/i.test(this.sql);
    if (!select && !plainReturning(this.sql)) {
      count(this.stats, {});
      return this.inner.raw<T>();
    }
    let result: D1Result<Record<string, unknown>>;
    try {
      result = select
        ? await this.db
            .prepare(`select * from (${this.sql}\n)`)
            .bind(...this.values)
            .all()
        : await this.inner.all();
    } catch (err) {
      if (!select) throw err;
      // Not wrappable after all (e.g. `with … insert`): run it as it was, unmetered.
      count(this.stats, {});
      return this.inner.raw<T>();
    }
    count(this.stats, result);
    const rows = result.results;
    const keys = rows[0] ? Object.keys(rows[0]) : [];
    // Integer-like names ("1") would be enumerated first: fetch the arrays themselves (a read).
    if (keys.length > 1 && keys.some((k) => /^\d+$/.test(k))) return this.inner.raw<T>();
    return rows.map((row) => Object.values(row)) as T[];
  }
}

/** `db` with every statement's rows_read/rows_written added to `stats`. */
export function meteredD1(db: D1Database, stats: D1Stats): D1Database {
  return {
    prepare: (sql: string) => new MeteredStatement(db, stats, sql, db.prepare(sql)),
    batch: async <T = unknown>(statements: D1PreparedStatement[]) => {
      const results = await db.batch<T>(statements.map((s) => (s instanceof MeteredStatement ? s.inner : s)));
      for (const r of results) count(stats, r);
      return results;
    },
    exec: async (query: string) => {
      const result = await db.exec(query);
      stats.queries += result.count;
      stats.unmetered += result.count;
      return result;
    },
    withSession: (constraintOrBookmark?: D1SessionBookmark | D1SessionConstraint) =>
      db.withSession(constraintOrBookmark),
    dump: () => db.dump(),
  };
}
