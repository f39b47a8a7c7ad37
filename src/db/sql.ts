import { type SQL, sql } from "drizzle-orm";
import type { SQLiteColumn } from "drizzle-orm/sqlite-core";

/**
 * `column IN (ids)` with the list bound as ONE JSON parameter: D1 allows at most 100 bound
 * parameters per statement, and a key may be restricted to up to 100 inboxes.
 */
export function inList(column: SQLiteColumn | SQL, ids: string[]): SQL {
  return sql`${column} IN (SELECT value FROM json_each(${JSON.stringify(ids)}))`;
}
