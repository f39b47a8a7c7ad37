import { z } from "@hono/zod-openapi";
import { BadRequest } from "./errors";

/** `?limit=` (1..100, default 20) and `?cursor=` shared by every list. */
export const PageQuery = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(20).openapi({ example: 20 }),
  cursor: z.string().max(200).optional().openapi({ description: "Opaque cursor from `meta.next_cursor`." }),
});

export interface Page {
  limit: number;
  /** Id to continue after (exclusive), newest-first lists use `id < before`. */
  before?: string;
}

/** Decodes the opaque cursor; a tampered one is a 400, not an empty page. */
export function toPage(query: { limit: number; cursor?: string | undefined }): Page {
  if (!query.cursor) return { limit: query.limit };
  let id: string;
  try {
    id = atob(query.cursor.replace(/-/g, "+").replace(/_/g, "/"));
  } catch {
    throw new BadRequest("invalid_cursor", "The cursor is not valid.");
  }
  if (!/^[a-z]+_[0-9a-z]{26}$/.test(id)) throw new BadRequest("invalid_cursor", "The cursor is not valid.");
  return { limit: query.limit, before: id };
}

/** Cuts a `limit + 1` fetch into a page and its next cursor. */
export function pageOf<T extends { id: string }>(rows: T[], limit: number): { items: T[]; nextCursor: string | null } {
  const items = rows.slice(0, limit);
  const last = items.at(-1);
  const nextCursor =
    rows.length > limit && last ? btoa(last.id).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "") : null;
  return { items, nextCursor };
}

export const ListMeta = z.object({
  limit: z.number().int(),
  next_cursor: z.string().nullable(),
});
