/** True when a D1 error is a UNIQUE violation naming `columns` (e.g. "inboxes.address"). */
export function isUniqueViolation(err: unknown, columns: string): boolean {
  const text = `${(err as Error)?.message ?? ""} ${String((err as { cause?: unknown })?.cause ?? "")}`;
  return text.includes("UNIQUE constraint failed") && text.includes(columns);
}
