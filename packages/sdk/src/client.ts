// `new Mailbot({ apiKey, baseUrl })`: one resource object per part of the API, named as in the API.
import { MailbotError, WaitTimeoutError } from "./errors.js";
import { type ClientOptions, HttpClient, ListRequest, newIdempotencyKey, type QueryValue } from "./http.js";
import { EventStream, type StreamOptions } from "./sse.js";
import type {
  Account,
  AuditEntry,
  BodyOf,
  CreatedApiKey,
  DataOf,
  Domain,
  Inbox,
  ItemOf,
  MailbotEvent,
  Message,
  MessageListItem,
  Page,
  QueryOf,
  Registration,
  Thread,
  ThreadWithMessages,
  Usage,
  Webhook,
  WebhookDelivery,
  WebhookWithSecret,
} from "./types.js";
import {
  type BodyLike,
  checkWebhook,
  type HeadersLike,
  type VerifyOptions,
  type VerifyResult,
  verifyWebhook,
} from "./webhook-signature.js";

/** Options of a creating call: the Idempotency-Key (generated when absent, reused by retries). */
export interface CreateOptions {
  idempotencyKey?: string;
  signal?: AbortSignal;
}
interface CallOptions {
  signal?: AbortSignal;
}

const enc = encodeURIComponent;
type Q = Record<string, QueryValue>;
const q = (v: object | undefined) => v as Q | undefined;

abstract class Resource {
  constructor(protected readonly http: HttpClient) {}

  protected async get<T>(path: string, query?: object, o?: CallOptions): Promise<T> {
    return (await this.http.request<T>("GET", path, { query: q(query), signal: o?.signal })).data;
  }
  protected async createIn<T>(path: string, body: unknown, o?: CreateOptions): Promise<T> {
    const idempotencyKey = o?.idempotencyKey ?? newIdempotencyKey();
    return (await this.http.request<T>("POST", path, { body, idempotencyKey, signal: o?.signal })).data;
  }
  protected async post<T>(path: string, body?: unknown, o?: CallOptions & { retrySafe?: boolean }): Promise<T> {
    return (await this.http.request<T>("POST", path, { body, signal: o?.signal, retrySafe: o?.retrySafe })).data;
  }
  protected async patch<T>(path: string, body: unknown, o?: CallOptions): Promise<T> {
    return (await this.http.request<T>("PATCH", path, { body, signal: o?.signal })).data;
  }
  protected async del<T>(path: string, o?: CallOptions): Promise<T> {
    return (await this.http.request<T>("DELETE", path, { signal: o?.signal })).data;
  }
  protected listOf<T>(path: string, query?: object): ListRequest<T> {
    const base = (query ?? {}) as Q;
    return new ListRequest<T>((cursor) => this.http.page<T>(path, { ...base, cursor }), base.cursor as string);
  }
}

export class AuthResource extends Resource {
  /** Creates an account, its first key and a sandbox inbox (no key needed when registration is open). */
  register(body: BodyOf<"/v1/auth/register", "post">, o?: CreateOptions): Promise<Registration> {
    return this.createIn("/v1/auth/register", body, o);
  }
}

export class AccountResource extends Resource {
  retrieve(o?: CallOptions): Promise<Account> {
    return this.get("/v1/account", undefined, o);
  }
  update(body: BodyOf<"/v1/account", "patch">, o?: CallOptions): Promise<Account> {
    return this.patch("/v1/account", body, o);
  }
}

export class ApiKeysResource extends Resource {
  create(body: BodyOf<"/v1/api-keys", "post">, o?: CreateOptions): Promise<CreatedApiKey> {
    return this.createIn("/v1/api-keys", body, o);
  }
  list(query?: QueryOf<"/v1/api-keys", "get">): ListRequest<ItemOf<"/v1/api-keys", "get">> {
    return this.listOf("/v1/api-keys", query);
  }
  revoke(keyId: string, o?: CallOptions): Promise<DataOf<"/v1/api-keys/{key_id}", "delete">> {
    return this.del(`/v1/api-keys/${enc(keyId)}`, o);
  }
}

export class InboxesResource extends Resource {
  create(body: BodyOf<"/v1/inboxes", "post">, o?: CreateOptions): Promise<Inbox> {
    return this.createIn("/v1/inboxes", body, o);
  }
  list(query?: QueryOf<"/v1/inboxes", "get">): ListRequest<Inbox> {
    return this.listOf("/v1/inboxes", query);
  }
  retrieve(inboxId: string, o?: CallOptions): Promise<Inbox> {
    return this.get(`/v1/inboxes/${enc(inboxId)}`, undefined, o);
  }
  update(inboxId: string, body: BodyOf<"/v1/inboxes/{inbox_id}", "patch">, o?: CallOptions): Promise<Inbox> {
    return this.patch(`/v1/inboxes/${enc(inboxId)}`, body, o);
  }
  /** Deactivates the inbox (DELETE: soft, its data stays). */
  disable(inboxId: string, o?: CallOptions): Promise<Inbox> {
    return this.del(`/v1/inboxes/${enc(inboxId)}`, o);
  }
  enable(inboxId: string, o?: CallOptions): Promise<Inbox> {
    return this.post(`/v1/inboxes/${enc(inboxId)}/enable`, undefined, { ...o, retrySafe: true });
  }
  reputation(inboxId: string, o?: CallOptions): Promise<DataOf<"/v1/inboxes/{inbox_id}/reputation", "get">> {
    return this.get(`/v1/inboxes/${enc(inboxId)}/reputation`, undefined, o);
  }
}

export type WaitQuery = QueryOf<"/v1/inboxes/{inbox_id}/messages/wait", "get">;
export interface WaitForOptions extends Omit<WaitQuery, "timeout_ms"> {
  /** Overall time to wait, in milliseconds (several long-polls of up to 30 s). Default 30 000. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export class MessagesResource extends Resource {
  /** Sends (202, status `queued`); one Idempotency-Key for all attempts, so a retry never sends twice. */
  send(inboxId: string, body: BodyOf<"/v1/inboxes/{inbox_id}/messages", "post">, o?: CreateOptions): Promise<Message> {
    return this.createIn(`/v1/inboxes/${enc(inboxId)}/messages`, body, o);
  }
  list(inboxId: string, query?: QueryOf<"/v1/inboxes/{inbox_id}/messages", "get">): ListRequest<MessageListItem> {
    return this.listOf(`/v1/inboxes/${enc(inboxId)}/messages`, query);
  }
  search(
    inboxId: string,
    query: QueryOf<"/v1/inboxes/{inbox_id}/messages/search", "get">,
  ): ListRequest<ItemOf<"/v1/inboxes/{inbox_id}/messages/search", "get">> {
    return this.listOf(`/v1/inboxes/${enc(inboxId)}/messages/search`, query);
  }
  retrieve(
    inboxId: string,
    messageId: string,
    query?: QueryOf<"/v1/inboxes/{inbox_id}/messages/{message_id}", "get">,
    o?: CallOptions,
  ): Promise<Message> {
    return this.get(`/v1/inboxes/${enc(inboxId)}/messages/${enc(messageId)}`, query, o);
  }
  update(
    inboxId: string,
    messageId: string,
    body: BodyOf<"/v1/inboxes/{inbox_id}/messages/{message_id}", "patch">,
    o?: CallOptions,
  ): Promise<Message> {
    return this.patch(`/v1/inboxes/${enc(inboxId)}/messages/${enc(messageId)}`, body, o);
  }
  reply(
    messageId: string,
    body: BodyOf<"/v1/messages/{message_id}/reply", "post">,
    o?: CreateOptions,
  ): Promise<Message> {
    return this.createIn(`/v1/messages/${enc(messageId)}/reply`, body, o);
  }
  forward(
    messageId: string,
    body: BodyOf<"/v1/messages/{message_id}/forward", "post">,
    o?: CreateOptions,
  ): Promise<Message> {
    return this.createIn(`/v1/messages/${enc(messageId)}/forward`, body, o);
  }
  /** The exact bytes received or sent (message/rfc822). */
  async raw(inboxId: string, messageId: string, o?: CallOptions): Promise<Uint8Array> {
    const path = `/v1/inboxes/${enc(inboxId)}/messages/${enc(messageId)}/raw`;
    const { response } = await this.http.request("GET", path, { raw: true, signal: o?.signal });
    return new Uint8Array(await response.arrayBuffer());
  }
  async attachment(
    inboxId: string,
    messageId: string,
    attachmentId: string,
    o?: CallOptions,
  ): Promise<{ bytes: Uint8Array; contentType: string | null }> {
    const path = `/v1/inboxes/${enc(inboxId)}/messages/${enc(messageId)}/attachments/${enc(attachmentId)}`;
    const { response } = await this.http.request("GET", path, { raw: true, signal: o?.signal });
    return { bytes: new Uint8Array(await response.arrayBuffer()), contentType: response.headers.get("content-type") };
  }
  /** One long-poll (<= 30 s): the first matching message, or null when the time is up. */
  async wait(inboxId: string, query: WaitQuery = {}, o?: CallOptions): Promise<Message | null> {
    try {
      const res = await this.http.request<Message>("GET", `/v1/inboxes/${enc(inboxId)}/messages/wait`, {
        query: q(query),
        signal: o?.signal,
        extraTimeoutMs: query.timeout_ms ?? 30_000,
      });
      return res.data;
    } catch (err) {
      if (err instanceof WaitTimeoutError) return null;
      throw err;
    }
  }
  /**
   * Waits for the first message matching the filters that arrives at or after `since` (default:
   * now), across as many long-polls as `timeoutMs` needs. Throws WaitTimeoutError when none came.
   */
  async waitFor(inboxId: string, options: WaitForOptions = {}): Promise<Message> {
    const { timeoutMs = 30_000, signal, ...filters } = options;
    const since = filters.since ?? new Date().toISOString();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = deadline - Date.now();
      const found = await this.wait(
        inboxId,
        { ...filters, since, timeout_ms: Math.max(0, Math.min(30_000, left)) },
        { signal },
      );
      if (found) return found;
      if (deadline - Date.now() <= 0) {
        throw new WaitTimeoutError({
          status: 408,
          code: "wait_timeout",
          message: `No matching message within ${Math.round(timeoutMs / 1000)} s.`,
        });
      }
    }
  }
}

export class ThreadsResource extends Resource {
  list(inboxId: string, query?: QueryOf<"/v1/inboxes/{inbox_id}/threads", "get">): ListRequest<Thread> {
    return this.listOf(`/v1/inboxes/${enc(inboxId)}/threads`, query);
  }
  retrieve(inboxId: string, threadId: string, o?: CallOptions): Promise<ThreadWithMessages> {
    return this.get(`/v1/inboxes/${enc(inboxId)}/threads/${enc(threadId)}`, undefined, o);
  }
}

export class WebhooksResource extends Resource {
  create(body: BodyOf<"/v1/webhooks", "post">, o?: CreateOptions): Promise<WebhookWithSecret> {
    return this.createIn("/v1/webhooks", body, o);
  }
  list(query?: QueryOf<"/v1/webhooks", "get">): ListRequest<Webhook> {
    return this.listOf("/v1/webhooks", query);
  }
  retrieve(webhookId: string, o?: CallOptions): Promise<Webhook> {
    return this.get(`/v1/webhooks/${enc(webhookId)}`, undefined, o);
  }
  update(webhookId: string, body: BodyOf<"/v1/webhooks/{webhook_id}", "patch">, o?: CallOptions): Promise<Webhook> {
    return this.patch(`/v1/webhooks/${enc(webhookId)}`, body, o);
  }
  delete(webhookId: string, o?: CallOptions): Promise<DataOf<"/v1/webhooks/{webhook_id}", "delete">> {
    return this.del(`/v1/webhooks/${enc(webhookId)}`, o);
  }
  enable(webhookId: string, o?: CallOptions): Promise<Webhook> {
    return this.post(`/v1/webhooks/${enc(webhookId)}/enable`, undefined, { ...o, retrySafe: true });
  }
  /** Not retried after a network error or 5xx: a second rotation would retire the new secret's predecessor. */
  rotateSecret(webhookId: string, o?: CallOptions): Promise<WebhookWithSecret> {
    return this.post(`/v1/webhooks/${enc(webhookId)}/rotate-secret`, undefined, o);
  }
  test(webhookId: string, o?: CallOptions): Promise<DataOf<"/v1/webhooks/{webhook_id}/test", "post">> {
    return this.post(`/v1/webhooks/${enc(webhookId)}/test`, undefined, o);
  }
  deliveries(
    webhookId: string,
    query?: QueryOf<"/v1/webhooks/{webhook_id}/deliveries", "get">,
  ): ListRequest<WebhookDelivery> {
    return this.listOf(`/v1/webhooks/${enc(webhookId)}/deliveries`, query);
  }
  /** Whether a delivery is authentic (either signature scheme) and fresh. `body`: the raw bytes. */
  verify(headers: HeadersLike, body: BodyLike, secret: string, options?: VerifyOptions): Promise<boolean> {
    return verifyWebhook(headers, body, secret, options);
  }
  /** Like verify, with the scheme that matched or the reason of a refusal. */
  check(headers: HeadersLike, body: BodyLike, secret: string, options?: VerifyOptions): Promise<VerifyResult> {
    return checkWebhook(headers, body, secret, options);
  }
  /** The event of an authentic delivery; throws MailbotError `invalid_signature` otherwise. */
  async unwrap(headers: HeadersLike, body: BodyLike, secret: string, options?: VerifyOptions): Promise<MailbotEvent> {
    const result = await checkWebhook(headers, body, secret, options);
    if (!result.ok) {
      throw new MailbotError({ status: null, code: "invalid_signature", message: `Webhook refused: ${result.reason}` });
    }
    const text = typeof body === "string" ? body : new TextDecoder().decode(body);
    return JSON.parse(text) as MailbotEvent;
  }
}

export class EventsResource extends Resource {
  list(query?: Omit<QueryOf<"/v1/events", "get">, "after">): ListRequest<MailbotEvent> {
    return this.listOf("/v1/events", query);
  }
  retrieve(eventId: string, o?: CallOptions): Promise<MailbotEvent> {
    return this.get(`/v1/events/${enc(eventId)}`, undefined, o);
  }
  /** Events committed after `after`, oldest first; waits up to `wait` seconds (<= 30) for one. */
  async poll(query: QueryOf<"/v1/events", "get"> & { wait?: number }, o?: CallOptions): Promise<MailbotEvent[]> {
    const res = await this.http.request<MailbotEvent[]>("GET", "/v1/events", {
      query: q(query),
      signal: o?.signal,
      extraTimeoutMs: (query.wait ?? 0) * 1000,
    });
    return res.data;
  }
  replay(eventId: string, body: BodyOf<"/v1/events/{event_id}/replay", "post"> = {}, o?: CreateOptions) {
    return this.createIn<DataOf<"/v1/events/{event_id}/replay", "post">>(`/v1/events/${enc(eventId)}/replay`, body, o);
  }
  /** Server-Sent Events from GET /v1/events/stream, resumed with Last-Event-ID after any drop. */
  stream(options?: StreamOptions): EventStream {
    return new EventStream(this.http, options);
  }
}

export class DomainsResource extends Resource {
  create(body: BodyOf<"/v1/domains", "post">, o?: CreateOptions): Promise<Domain> {
    return this.createIn("/v1/domains", body, o);
  }
  list(query?: QueryOf<"/v1/domains", "get">): ListRequest<Domain> {
    return this.listOf("/v1/domains", query);
  }
  retrieve(domainId: string, o?: CallOptions): Promise<Domain> {
    return this.get(`/v1/domains/${enc(domainId)}`, undefined, o);
  }
  verify(domainId: string, o?: CallOptions): Promise<DataOf<"/v1/domains/{domain_id}/verify", "post">> {
    return this.post(`/v1/domains/${enc(domainId)}/verify`, undefined, { ...o, retrySafe: true });
  }
  delete(domainId: string, o?: CallOptions): Promise<DataOf<"/v1/domains/{domain_id}", "delete">> {
    return this.del(`/v1/domains/${enc(domainId)}`, o);
  }
}

export class ComplianceResource extends Resource {
  check(domain: string, o?: CallOptions): Promise<DataOf<"/v1/compliance/check", "get">> {
    return this.get("/v1/compliance/check", { domain }, o);
  }
  readiness(inboxId: string, o?: CallOptions): Promise<DataOf<"/v1/compliance/readiness/{inbox_id}", "get">> {
    return this.get(`/v1/compliance/readiness/${enc(inboxId)}`, undefined, o);
  }
}

export class AuditLogResource extends Resource {
  list(query?: QueryOf<"/v1/audit-log", "get">): ListRequest<AuditEntry> {
    return this.listOf("/v1/audit-log", query);
  }
  verify(o?: CallOptions): Promise<DataOf<"/v1/audit-log/verify", "get">> {
    return this.get("/v1/audit-log/verify", undefined, o);
  }
}

export class UsageResource extends Resource {
  retrieve(o?: CallOptions): Promise<Usage> {
    return this.get("/v1/usage", undefined, o);
  }
  daily(query?: QueryOf<"/v1/usage/daily", "get">, o?: CallOptions): Promise<DataOf<"/v1/usage/daily", "get">> {
    return this.get("/v1/usage/daily", query, o);
  }
}

export class SuppressionsResource extends Resource {
  list(query?: QueryOf<"/v1/suppressions", "get">): ListRequest<ItemOf<"/v1/suppressions", "get">> {
    return this.listOf("/v1/suppressions", query);
  }
  delete(address: string, o?: CallOptions): Promise<DataOf<"/v1/suppressions/{address}", "delete">> {
    return this.del(`/v1/suppressions/${enc(address)}`, o);
  }
}

export class Mailbot {
  readonly http: HttpClient;
  readonly auth: AuthResource;
  readonly account: AccountResource;
  readonly apiKeys: ApiKeysResource;
  readonly inboxes: InboxesResource;
  readonly messages: MessagesResource;
  readonly threads: ThreadsResource;
  readonly webhooks: WebhooksResource;
  readonly events: EventsResource;
  readonly domains: DomainsResource;
  readonly compliance: ComplianceResource;
  readonly auditLog: AuditLogResource;
  readonly usage: UsageResource;
  readonly suppressions: SuppressionsResource;

  constructor(options: ClientOptions = {}) {
    this.http = new HttpClient(options);
    this.auth = new AuthResource(this.http);
    this.account = new AccountResource(this.http);
    this.apiKeys = new ApiKeysResource(this.http);
    this.inboxes = new InboxesResource(this.http);
    this.messages = new MessagesResource(this.http);
    this.threads = new ThreadsResource(this.http);
    this.webhooks = new WebhooksResource(this.http);
    this.events = new EventsResource(this.http);
    this.domains = new DomainsResource(this.http);
    this.compliance = new ComplianceResource(this.http);
    this.auditLog = new AuditLogResource(this.http);
    this.usage = new UsageResource(this.http);
    this.suppressions = new SuppressionsResource(this.http);
  }

  /**
   * The newest D1 bookmark this client was answered with (sent back on every request unless
   * `readYourWrites: false`). Hand it to another client (`new Mailbot({ bookmark })`) or process
   * so it, too, reads what this one wrote.
   */
  get bookmark(): string | undefined {
    return this.http.bookmark;
  }

  /** GET /v1/info (public). */
  info(o?: CallOptions): Promise<DataOf<"/v1/info", "get">> {
    return this.http.request<DataOf<"/v1/info", "get">>("GET", "/v1/info", { signal: o?.signal }).then((r) => r.data);
  }
}

export type { ClientOptions, Page, StreamOptions };
