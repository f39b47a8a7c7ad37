/**
 * The Worker's one logger: each call writes one JSON line, `{ level, msg, ...fields }`, which
 * Workers Logs (and `wrangler tail`) index by field. Field names are snake_case, like the wire.
 */
export type LogFields = Record<string, unknown>;

function write(level: "info" | "warn" | "error", msg: string, fields: LogFields): void {
  const line = JSON.stringify({ level, msg, ...fields });
  if (level === "error") console.error(line);
  else if (level === "warn") console.warn(line);
  else console.log(line);
}

export const log = {
  info: (msg: string, fields: LogFields = {}) => write("info", msg, fields),
  warn: (msg: string, fields: LogFields = {}) => write("warn", msg, fields),
  error: (msg: string, fields: LogFields = {}) => write("error", msg, fields),
};
