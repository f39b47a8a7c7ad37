import { exports } from "cloudflare:workers";
import { expect } from "vitest";

export const ADMIN_TOKEN = "test-admin-token-0123456789";

export interface Call {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: test responses are inspected field by field
  body: any;
  text: string;
}

/** One request into the Worker's fetch handler (no network), JSON in and out. */
export async function call(
  method: string,
  path: string,
  opts: { key?: string | null; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {},
): Promise<Call> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.key) headers.Authorization = `Bearer ${opts.key}`;
  let body: string | undefined;
  if (opts.rawBody !== undefined) body = opts.rawBody;
  else if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers["Content-Type"] ??= "application/json";
  }
  const res = await exports.default.fetch(new Request(`http://localhost${path}`, { method, headers, body }));
  const text = await res.text();
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  return { status: res.status, headers: res.headers, body: parsed, text };
}

let counter = 0;

/** Registers a fresh account; returns its key, account and sandbox inbox. */
export async function registerAccount(label = "user") {
  counter++;
  const res = await call("POST", "/v1/auth/register", {
    body: { email: `${label}-${counter}-${crypto.randomUUID().slice(0, 8)}@example.com`, name: `${label} ${counter}` },
  });
  expect(res.status, res.text).toBe(201);
  return {
    key: res.body.data.api_key as string,
    account: res.body.data.account,
    inbox: res.body.data.inbox,
  };
}

/** Asserts the documented error envelope and returns its error object. */
export function expectError(res: Call, status: number, code: string) {
  expect(res.status, res.text).toBe(status);
  expect(res.body).toMatchObject({
    error: { code, message: expect.any(String), request_id: expect.stringMatching(/^req_/) },
  });
  expect(res.headers.get("X-Request-Id")).toBe(res.body.error.request_id);
  return res.body.error;
}
