import { type SQL, sql } from "drizzle-orm";
import type { SQLiteColumn } from "drizzle-orm/sqlite-core";
import type { Db } from "./client";
import { limitGuard } from "./schema";

/**
 * `column IN (ids)` with the list bound as ONE JSON parameter: D1 allows at most 100 bound
 * parameters per statement, and a key may be restricted to up to 100 inboxes.
 */
export function inList(column: SQLiteColumn | SQL, ids: string[]): SQL {
  return sql`${column} IN (SELECT value FROM json_each(${JSON.stringify(ids)}))`;
}

/** `inList` for a prepared query: the placeholder `name` is given the list as JSON when it runs. */
export function inListOf(column: SQLiteColumn | SQL, name: string): SQL {
  return sql`${column} IN (SELECT value FROM json_each(${sql.placeholder(name)}))`;
}

/**
 * A batch statement that aborts its whole batch (error `limit_reached`, see isLimitReached) when
 * `count` is above `limit`. Put it after the insert it guards: D1 runs one batch at a time, so
 * the count sees every committed insert and this one, and a limit holds exactly under
 * concurrency (no check-then-insert window). The trigger is in migrations/0013_hardening.sql.
 */
export function abortIfOver(db: Db, name: string, count: SQL, limit: number) {
  return db.insert(limitGuard).select(sql`SELECT ${name} AS name WHERE (${count}) > ${limit}`);
}
