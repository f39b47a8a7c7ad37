import { getTableColumns, getTableName, is, SQL } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import type { SQLiteColumn, SQLiteTable } from "drizzle-orm/sqlite-core";
import type { Db } from "./client";

/**
 * Row inserts whose SQL is made once per table, for the writes every inbound mail and every send
 * make (the message, its attachments, its event, its audit entry).
 *
 * Why not drizzle's builder here: it builds each INSERT anew on every call, walking every column
 * with an `instanceof`-and-prototype check, and maps every value through a chain of SQL chunks.
 * For a message row (some forty columns) the batch of one mail cost ~0.7 ms of CPU in drizzle
 * alone (V8 profile of receiveMail in workerd), about a third of parsing the mail. The statement
 * here is the same one drizzle makes: every insertable column in table order, each value through
 * its column's own `mapToDriverValue` (JSON, booleans, timestamps), `null` bound as NULL, an
 * omitted value given the column's drizzle-side default or a literal NULL, as drizzle's
 * buildInsertQuery does (a test compares the two for the tables written here). The schema
 * stays drizzle's: only the string building is skipped.
 */
export interface Compiled {
  readonly sql: string;
  readonly params: readonly unknown[];
  /** Column names of RETURNING rows, when the caller wants them back from the batch. */
  readonly returning?: readonly string[];
}

/** A change statement: a drizzle query, or an insert made here. */
export type Statement = BatchItem<"sqlite"> | Compiled;

/** A SQL expression standing for a column's value, with its own bound parameters. */
export interface Expression {
  sql: string;
  params: unknown[];
}

interface Plan {
  columns: [key: string, column: SQLiteColumn][];
  /** The statement up to VALUES: `insert into "t" ("a", "b") values (`. */
  head: string;
}

const plans = new WeakMap<SQLiteTable, Plan>();

function planOf(table: SQLiteTable): Plan {
  let plan = plans.get(table);
  if (plan) return plan;
  // Generated columns take no value (drizzle's `shouldDisableInsert`).
  const columns = Object.entries(getTableColumns(table) as Record<string, SQLiteColumn>).filter(
    ([, column]) => column.generated === undefined || column.generated.type === "byDefault",
  );
  for (const [, column] of columns) {
    // A default written as SQL would have to be inlined; no table here has one, and refusing it
    // keeps this exactly equal to drizzle's insert.
    if (is(column.default, SQL) || column.defaultFn || column.onUpdateFn)
      throw new Error(`compiled insert: ${getTableName(table)}.${column.name} has a SQL or function default`);
  }
  plan = {
    columns,
    head: `insert into ${quote(getTableName(table))} (${columns.map(([, c]) => quote(c.name)).join(", ")}) values (`,
  };
  plans.set(table, plan);
  return plan;
}

function quote(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * `INSERT INTO table (every column) VALUES (...)` for `row`. `computed` gives SQL expressions for
 * some columns instead (a sequence number taken inside the insert, say); a value given for such a
 * column in `row` is ignored. `returning` names columns to read back (SQL names).
 */
export function insertRow<T extends SQLiteTable>(
  table: T,
  row: T["$inferInsert"],
  options: {
    computed?: Partial<Record<keyof T["$inferInsert"] & string, Expression>>;
    returning?: string[];
    /** "ignore": `on conflict do nothing`, as drizzle's `onConflictDoNothing()` writes it. */
    onConflict?: "ignore";
  } = {},
): Compiled {
  const plan = planOf(table);
  const values = row as Record<string, unknown>;
  const computed = (options.computed ?? {}) as Record<string, Expression | undefined>;
  const slots: string[] = [];
  const params: unknown[] = [];
  for (const [key, column] of plan.columns) {
    const expression = computed[key];
    if (expression) {
      slots.push(expression.sql);
      params.push(...expression.params);
      continue;
    }
    // Omitted: the column's drizzle-side default, else a literal NULL (never SQL's own DEFAULT:
    // drizzle names every column too, and writes `null` for these).
    const value = values[key] === undefined ? (column.default ?? undefined) : values[key];
    if (value === undefined) {
      slots.push("null");
      continue;
    }
    slots.push("?");
    params.push(value === null ? null : column.mapToDriverValue(value));
  }
  const returning = options.returning;
  const conflict = options.onConflict === "ignore" ? " on conflict do nothing" : "";
  const tail = returning?.length ? `)${conflict} returning ${returning.map(quote).join(", ")}` : `)${conflict}`;
  return { sql: plan.head + slots.join(", ") + tail, params, ...(returning ? { returning } : {}) };
}

function isCompiled(statement: Statement): statement is Compiled {
  return typeof (statement as Compiled).sql === "string" && Array.isArray((statement as Compiled).params);
}

/**
 * Runs change statements as ONE D1 batch (one transaction), in order, on the handle's own client
 * (a request's D1 session, development's metering). Drizzle queries are turned into their SQL by
 * drizzle; inserts made here are bound as they are. Returns, per statement, the RETURNING rows of
 * a compiled insert that asked for them (objects keyed by SQL column name), else the raw D1 result.
 */
export async function runBatch(db: Db, statements: Statement[]): Promise<unknown[]> {
  if (statements.length === 0) return [];
  const client = db.$client as D1Database;
  const bound = statements.map((s) => {
    if (isCompiled(s)) return client.prepare(s.sql).bind(...s.params);
    // Every drizzle query builder has toSQL(); a raw `db.run(sql…)` does not: refused loudly.
    const built = s as unknown as { toSQL?: () => { sql: string; params: unknown[] } };
    if (typeof built.toSQL !== "function") throw new Error("runBatch: a statement without toSQL()");
    const query = built.toSQL();
    return client.prepare(query.sql).bind(...query.params);
  });
  const results = await client.batch(bound);
  return results.map((r, i) => {
    const s = statements[i] as Statement;
    return isCompiled(s) && s.returning ? (r.results ?? []) : r;
  });
}
