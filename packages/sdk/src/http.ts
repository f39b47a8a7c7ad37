// The transport: one `fetch` per attempt, JSON in and out, typed errors, retries with backoff.
import { errorFor, MailbotError } from "./errors.js";
import type { Page } from "./types.js";

export interface ClientOptions {
  /** `mb_…`. Defaults to MAILBOT_API_KEY where a process environment exists. */
  apiKey?: string;
  /** Defaults to MAILBOT_BASE_URL where a process environment exists, else http://localhost:8787. */
  baseUrl?: string;
  /** Retries after the first attempt (network errors, 5xx, request-rate 429). Default 3. */
  maxRetries?: number;
  /** Per-attempt timeout in milliseconds (long-polls add their own wait). Default 60 000. */
  timeoutMs?: number;
  /** First backoff step in milliseconds (doubled per retry, with jitter). Default 500. */
  retryBaseMs?: number;
  /** Upper bound of any single wait between attempts, `Retry-After` included. Default 60 000. */
  maxRetryDelayMs?: number;
  /** A fetch implementation (default: the global one). */
  fetch?: typeof fetch;
  /** Extra headers on every request. */
  headers?: Record<string, string>;
  /**
   * Read your own writes on a deployment with D1 read replicas (default true): the client keeps
   * the newest `X-Mailbot-Bookmark` it was answered with and sends it back on every request, so
   * a read after a write is served by a replica that already has the write. Set false to let
   * each read go to the nearest replica whatever it has seen.
   */
  readYourWrites?: boolean;
  /**
   * A bookmark to start from (`client.bookmark` of another client or process, say). A value that
   * is not a D1 bookmark is a TypeError here: dropped quietly, the client would read from any
   * replica and the caller would believe it reads its own writes.
   */
  bookmark?: string;
}

/** The header the API returns its D1 bookmark in and accepts it back (API.md "Scale"). */
export const BOOKMARK_HEADER = "x-mailbot-bookmark";
/** D1 bookmarks: dash-separated hex, fixed width, so newer ones sort after older ones. */
const BOOKMARK = /^[0-9a-f]{1,16}(?:-[0-9a-f]{1,64}){1,8}$/i;

export type QueryValue = string | number | boolean | null | undefined | readonly (string | number)[];

export interface RequestOptions {
  query?: Record<string, QueryValue>;
  body?: unknown;
  /** Creating calls: an Idempotency-Key (generated when not given) sent on every attempt. */
  idempotencyKey?: string;
  /** Whether a retry after a network error or 5xx is safe (default: true except non-creating POST). */
  retrySafe?: boolean;
  /** Extra milliseconds for this attempt's timeout (long-polls). */
  extraTimeoutMs?: number;
  signal?: AbortSignal;
  headers?: Record<string, string>;
  /** Answer with the raw Response (checked for errors) instead of parsed JSON. */
  raw?: boolean;
}

export interface Envelope<T> {
  data: T;
  meta?: { limit?: number; next_cursor?: string | null };
  response: Response;
}

const env = (name: string): string | undefined =>
  (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[name] || undefined;

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });

/** `Retry-After` as seconds (a number of seconds or an HTTP date), or null. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | null {
  if (!value) return null;
  if (/^\d+(\.\d+)?$/.test(value.trim())) return Number(value);
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, (at - now) / 1000);
}

export function newIdempotencyKey(): string {
  return `sdk_${crypto.randomUUID()}`;
}

export function queryString(query: Record<string, QueryValue> | undefined): string {
  if (!query) return "";
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null) continue;
    if (Array.isArray(v)) for (const item of v) params.append(k, String(item));
    else params.append(k, String(v));
  }
  const s = params.toString();
  return s ? `?${s}` : "";
}

/** Codes of a 429 that only says "too fast": the request was not processed, so a retry is safe. */
const RETRYABLE_429 = new Set(["rate_limited", "too_many_failed_attempts", "too_many_connections"]);

export class HttpClient {
  readonly baseUrl: string;
  readonly apiKey: string | undefined;
  readonly maxRetries: number;
  readonly timeoutMs: number;
  readonly retryBaseMs: number;
  readonly maxRetryDelayMs: number;
  readonly headers: Record<string, string>;
  readonly readYourWrites: boolean;
  /** The newest D1 bookmark seen (see ClientOptions.readYourWrites), or undefined. */
  bookmark: string | undefined;
  private readonly fetchImpl: typeof fetch;

  constructor(options: ClientOptions = {}) {
    this.apiKey = options.apiKey ?? env("MAILBOT_API_KEY");
    this.baseUrl = (options.baseUrl ?? env("MAILBOT_BASE_URL") ?? "http://localhost:8787").replace(/\/+$/, "");
    this.maxRetries = options.maxRetries ?? 3;
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.retryBaseMs = options.retryBaseMs ?? 500;
    this.maxRetryDelayMs = options.maxRetryDelayMs ?? 60_000;
    this.headers = options.headers ?? {};
    this.readYourWrites = options.readYourWrites ?? true;
    // Trimmed as the server trims the header (a value read from a file or a variable may end in a newline).
    const bookmark = options.bookmark?.trim();
    if (bookmark && !BOOKMARK.test(bookmark)) {
      throw new TypeError(
        `bookmark: ${JSON.stringify(bookmark.slice(0, 40))} is not a D1 bookmark (pass client.bookmark, or an ${BOOKMARK_HEADER} header value)`,
      );
    }
    this.bookmark = bookmark || undefined;
    // Called through a wrapper: some runtimes refuse a `fetch` invoked with another `this`.
    const f = options.fetch ?? globalThis.fetch;
    this.fetchImpl = (input, init) => f(input, init);
  }

  /** Milliseconds before retry number `attempt` (1-based): Retry-After when given, else exponential with jitter. */
  backoff(attempt: number, retryAfterSeconds: number | null): number {
    if (retryAfterSeconds !== null) return Math.min(retryAfterSeconds * 1000, this.maxRetryDelayMs);
    const base = this.retryBaseMs * 2 ** (attempt - 1);
    return Math.min(base / 2 + Math.random() * (base / 2), this.maxRetryDelayMs);
  }

  authHeaders(): Record<string, string> {
    const h: Record<string, string> = { ...this.headers };
    if (this.apiKey) h.authorization = `Bearer ${this.apiKey}`;
    if (this.readYourWrites && this.bookmark) h[BOOKMARK_HEADER] = this.bookmark;
    return h;
  }

  /** Keeps a response's bookmark when it is newer than the one held (answers may arrive out of order). */
  noteBookmark(res: Response): void {
    const value = res.headers.get(BOOKMARK_HEADER)?.trim();
    if (!value || !BOOKMARK.test(value)) return;
    if (this.bookmark === undefined || value.toLowerCase() > this.bookmark.toLowerCase()) this.bookmark = value;
  }

  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<Envelope<T>> {
    const url = this.baseUrl + path + queryString(opts.query);
    const headers: Record<string, string> = { accept: "application/json", ...this.authHeaders(), ...opts.headers };
    let body: string | undefined;
    if (opts.body !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(opts.body);
    }
    if (opts.idempotencyKey) headers["idempotency-key"] = opts.idempotencyKey;
    const retrySafe = opts.retrySafe ?? (method !== "POST" || opts.idempotencyKey !== undefined);

    for (let attempt = 0; ; attempt++) {
      // The newest bookmark on each attempt (another call may have written meanwhile).
      if (this.readYourWrites && this.bookmark) headers[BOOKMARK_HEADER] = this.bookmark;
      const timeout = AbortSignal.timeout(this.timeoutMs + (opts.extraTimeoutMs ?? 0));
      const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
      let res: Response;
      try {
        res = await this.fetchImpl(url, { method, headers, body, signal });
      } catch (cause) {
        if (opts.signal?.aborted) throw opts.signal.reason ?? cause;
        const timedOut = timeout.aborted;
        const err = errorFor({
          status: null,
          code: timedOut ? "timeout" : "connection_error",
          message: timedOut ? `${method} ${path} timed out` : `${method} ${path} failed: ${(cause as Error)?.message}`,
          cause,
        });
        if (retrySafe && attempt < this.maxRetries) {
          await sleep(this.backoff(attempt + 1, null), opts.signal);
          continue;
        }
        throw err;
      }
      this.noteBookmark(res);
      if (res.ok) {
        if (opts.raw) return { data: undefined as T, response: res };
        const json = (await res.json()) as { data: T; meta?: Envelope<T>["meta"] };
        return { data: json.data, meta: json.meta, response: res };
      }
      const err = await errorFromResponse(res);
      const retryable =
        (res.status === 429 && RETRYABLE_429.has(err.code)) ||
        (res.status === 409 && err.code === "idempotency_request_in_progress") ||
        (res.status >= 500 && retrySafe);
      if (retryable && attempt < this.maxRetries) {
        await sleep(this.backoff(attempt + 1, err.retryAfterSeconds), opts.signal);
        continue;
      }
      throw err;
    }
  }

  async page<T>(path: string, query: Record<string, QueryValue> | undefined): Promise<Page<T>> {
    const { data, meta } = await this.request<T[]>("GET", path, { query });
    return { data, nextCursor: meta?.next_cursor ?? null, limit: meta?.limit ?? null };
  }
}

/** A MailbotError from a non-2xx response (the API's error body when it has one). */
export async function errorFromResponse(res: Response): Promise<MailbotError> {
  const text = await res.text().catch(() => "");
  let parsed: { error?: { code?: string; message?: string; details?: unknown; request_id?: string } } | null = null;
  try {
    parsed = JSON.parse(text);
  } catch {}
  const e = parsed?.error;
  return errorFor({
    status: res.status,
    code: e?.code ?? `http_${res.status}`,
    message: e?.message ?? (text.slice(0, 200) || `HTTP ${res.status}`),
    details: e?.details,
    requestId: e?.request_id ?? res.headers.get("x-request-id"),
    retryAfterSeconds: parseRetryAfter(res.headers.get("retry-after")),
    headers: res.headers,
  });
}

/** A list call: await it for one page, or `for await` over every item across cursors. */
export class ListRequest<T> implements PromiseLike<Page<T>>, AsyncIterable<T> {
  constructor(
    private readonly fetchPage: (cursor: string | undefined) => Promise<Page<T>>,
    private readonly cursor?: string,
  ) {}

  // biome-ignore lint/suspicious/noThenProperty: a list call is awaitable on purpose (one page).
  then<A = Page<T>, B = never>(
    onfulfilled?: ((value: Page<T>) => A | PromiseLike<A>) | null,
    onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return this.fetchPage(this.cursor).then(onfulfilled, onrejected);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    let cursor = this.cursor;
    do {
      const page = await this.fetchPage(cursor);
      yield* page.data;
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
  }

  /** Every item, across all pages (mind large lists). */
  async toArray(): Promise<T[]> {
    const all: T[] = [];
    for await (const item of this) all.push(item);
    return all;
  }
}

export { MailbotError };
