// Shared by the bench scripts: option parsing and the one error type that aborts a run.
import { LocalWorkerError } from "../scripts/local-worker.mjs";

/** A positive integer from the environment, or the fallback; anything else ends the run. */
export function positiveInt(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (Number.isInteger(n) && n > 0) return n;
  console.error(`bench: ${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  process.exit(1);
}

/** Aborts the run; main() prints the message (and the wrangler log if asked) and exits 1. */
export const BenchError = LocalWorkerError;
export function fail(message, showLog = false) {
  throw new BenchError(message, showLog);
}

/** One JSON request to the local Worker; `json` is null when the body is not JSON. */
export async function call(base, method, path, { token, body, headers: extra } = {}) {
  const headers = { ...extra };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body) headers["content-type"] = "application/json";
  const res = await fetch(base + path, { method, headers, body: body && JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, json, text };
}
