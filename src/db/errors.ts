/** True when a D1 error is a UNIQUE violation naming `columns` (e.g. "inboxes.address"). */
export function isUniqueViolation(err: unknown, columns: string): boolean {
  const text = `${(err as Error)?.message ?? ""} ${String((err as { cause?: unknown })?.cause ?? "")}`;
  return text.includes("UNIQUE constraint failed") && text.includes(columns);
}

/** True when a batch was aborted by an `abortIfOver` guard (db/sql.ts). */
export function isLimitReached(err: unknown): boolean {
  const text = `${(err as Error)?.message ?? ""} ${String((err as { cause?: unknown })?.cause ?? "")}`;
  return text.includes("limit_reached");
}
