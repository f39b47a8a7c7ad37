import { z } from "@hono/zod-openapi";

/** Zod primitives of the wire shared by every feature's schemas (which the service layer imports too). */

/** ISO-8601 timestamp on the wire. */
export const Timestamp = z.string().openapi({ example: "2026-03-15T10:30:00.000Z" });
