import { drizzle } from "drizzle-orm/d1";
import { currentD1Stats, meteredD1 } from "./metering";
import * as schema from "./schema";

/** A drizzle handle over D1; cheap, made per request. In development its reads are counted (d1-stats). */
export function createDb(d1: D1Database) {
  const stats = currentD1Stats();
  return drizzle(stats ? meteredD1(d1, stats) : d1, { schema });
}

export type Db = ReturnType<typeof createDb>;
