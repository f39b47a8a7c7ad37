/**
 * The pure half of the realtime event stream, shared by the events feature (which builds
 * subscriptions and publishes) and the EventHub Durable Object (which matches and sends).
 */

/** One committed event as the hub carries it: routing fields plus the wire JSON, serialized once. */
export interface HubEvent {
  id: string;
  /** The account's commit order (events.seq): the hub delivers in this order, never twice. */
  seq: number;
  type: string;
  inboxId: string | null;
  /** `JSON.stringify` of the event's wire shape (the `/v1/events` object). */
  json: string;
}

/** What one connection asked for and what its key may see. */
export interface Subscription {
  /** The API key that opened it (the per-key connection cap counts these). */
  keyId: string;
  /** Type patterns (`message.received`, `message.*`, `*`); empty: every type. */
  types: string[];
  /** Only this inbox's events (the `inbox_id` filter). */
  inboxId: string | null;
  /** A restricted key's inboxes: only their events, never account-level ones. */
  inboxIds: string[] | null;
}

/** An event row as the log stores it (the fields the hub needs). */
export interface LoggedEvent {
  id: string;
  accountId: string;
  type: string;
  inboxId: string | null;
  seq: number | null;
  data: Record<string, unknown>;
  createdAt: number;
}

/** The hub's form of a logged event; the JSON is exactly `/v1/events`' wire shape. */
export function toHubEvent(row: LoggedEvent): HubEvent {
  const wire = {
    id: row.id,
    type: row.type,
    created_at: new Date(row.createdAt).toISOString(),
    account_id: row.accountId,
    data: row.data,
  };
  return { id: row.id, seq: row.seq ?? 0, type: row.type, inboxId: row.inboxId, json: JSON.stringify(wire) };
}

/**
 * Whether a type pattern (`*` stands for any run of characters, as in `message.*`) matches a type.
 * A linear glob with one backtrack point (the last `*`), never a regex: a pattern of many `*`s
 * (`type=*****…z`, which the schema accepts) made a backtracking regex run for minutes inside the
 * account's hub, stalling every stream and publish. This costs at most pattern × type steps.
 */
export function typeMatches(pattern: string, type: string): boolean {
  let p = 0;
  let t = 0;
  let star = -1; // the last `*` seen in the pattern
  let mark = 0; // where in the type that `*` currently ends
  while (t < type.length) {
    if (p < pattern.length && pattern[p] === "*") {
      star = p++;
      mark = t;
    } else if (p < pattern.length && pattern[p] === type[t]) {
      p++;
      t++;
    } else if (star >= 0) {
      // Let the last `*` swallow one more character and retry from there.
      p = star + 1;
      t = ++mark;
    } else return false;
  }
  while (p < pattern.length && pattern[p] === "*") p++;
  return p === pattern.length;
}

/** Whether a connection with this subscription may and wants to see the event. */
export function subscriptionMatches(sub: Subscription, event: Pick<HubEvent, "type" | "inboxId">): boolean {
  if (sub.inboxIds !== null && (event.inboxId === null || !sub.inboxIds.includes(event.inboxId))) return false;
  if (sub.inboxId !== null && event.inboxId !== sub.inboxId) return false;
  return sub.types.length === 0 || sub.types.some((p) => typeMatches(p, event.type));
}

/** One SSE frame of an event: `id`, `event` and `data` lines (the JSON has no raw newlines). */
export function sseFrame(event: Pick<HubEvent, "id" | "type" | "json">): string {
  return `id: ${event.id}\nevent: ${event.type}\ndata: ${event.json}\n\n`;
}
