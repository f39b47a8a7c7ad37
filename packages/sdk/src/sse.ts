// Server-Sent Events over fetch (Authorization header works everywhere, unlike EventSource), with
// automatic resume: after a dropped or ended stream it reconnects with Last-Event-ID = the last
// event seen, so nothing is lost and nothing repeats.
import { errorFromResponse, type HttpClient, queryString } from "./http.js";
import type { MailbotEvent } from "./types.js";

export interface StreamOptions {
  /** Event types (`message.*` wildcards allowed), repeatable. */
  types?: string[];
  inboxId?: string;
  /** Resume after this event id (else only events from now on). */
  after?: string;
  signal?: AbortSignal;
  /** Give up after this many reconnects in a row without an event (default: never). */
  maxReconnects?: number;
}

interface RawEvent {
  id?: string;
  event?: string;
  data: string;
}

/** Parses an SSE byte stream into events (comments and heartbeats skipped). */
export async function* parseSse(body: ReadableStream<Uint8Array>, onRetry?: (ms: number) => void) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let current: RawEvent = { data: "" };
  let hasData = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let nl = buffer.search(/\r\n|\r|\n/);
      while (nl !== -1) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer[nl] === "\r" && buffer[nl + 1] === "\n" ? 2 : 1));
        if (line === "") {
          if (hasData) yield current;
          current = { data: "" };
          hasData = false;
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon === -1 ? line : line.slice(0, colon);
          let value = colon === -1 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "data") {
            current.data = hasData ? `${current.data}\n${value}` : value;
            hasData = true;
          } else if (field === "id") current.id = value;
          else if (field === "event") current.event = value;
          else if (field === "retry" && /^\d+$/.test(value)) onRetry?.(Number(value));
        }
        nl = buffer.search(/\r\n|\r|\n/);
      }
    }
  } finally {
    reader.releaseLock();
    await body.cancel().catch(() => {});
  }
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(t);
        resolve();
      },
      { once: true },
    );
  });

/** The event stream as an async iterator; `lastEventId` is where a later stream would resume. */
export class EventStream implements AsyncIterable<MailbotEvent> {
  lastEventId: string | undefined;
  /** How many times the stream has reconnected. */
  reconnects = 0;
  private readonly controller = new AbortController();

  constructor(
    private readonly http: HttpClient,
    private readonly options: StreamOptions = {},
  ) {
    this.lastEventId = options.after;
    options.signal?.addEventListener("abort", () => this.controller.abort(), { once: true });
  }

  /** Ends the stream (the iterator finishes). */
  close(): void {
    this.controller.abort();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<MailbotEvent> {
    const signal = this.controller.signal;
    let retryMs = 1000;
    let failures = 0;
    while (!signal.aborted) {
      const query = queryString({ type: this.options.types, inbox_id: this.options.inboxId });
      const headers: Record<string, string> = { accept: "text/event-stream", ...this.http.authHeaders() };
      if (this.lastEventId) headers["last-event-id"] = this.lastEventId;
      let res: Response;
      try {
        res = await fetch(`${this.http.baseUrl}/v1/events/stream${query}`, { headers, signal });
      } catch (err) {
        if (signal.aborted) return;
        if (++failures > (this.options.maxReconnects ?? Number.POSITIVE_INFINITY)) throw err;
        await sleep(this.http.backoff(Math.min(failures, 6), null), signal);
        continue;
      }
      if (!res.ok || !res.body) {
        const err = await errorFromResponse(res);
        const retryable = res.status === 429 || res.status >= 500;
        if (!retryable || ++failures > (this.options.maxReconnects ?? Number.POSITIVE_INFINITY)) throw err;
        await sleep(this.http.backoff(Math.min(failures, 6), err.retryAfterSeconds), signal);
        continue;
      }
      try {
        for await (const raw of parseSse(res.body, (ms) => {
          retryMs = ms;
        })) {
          failures = 0;
          if (raw.id) this.lastEventId = raw.id;
          yield JSON.parse(raw.data) as MailbotEvent;
        }
      } catch (err) {
        if (signal.aborted) return;
        if (++failures > (this.options.maxReconnects ?? Number.POSITIVE_INFINITY)) throw err;
      }
      if (signal.aborted) return;
      // The server ended the stream (or it dropped): resume from the last id seen.
      this.reconnects++;
      await sleep(Math.min(retryMs, this.http.maxRetryDelayMs), signal);
    }
  }
}
