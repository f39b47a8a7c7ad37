// Types of the wire, derived from the generated OpenAPI types (src/openapi.d.ts), so the SDK
// follows the API document: regenerate with `npm run sdk:types`.
import type { components, paths } from "./openapi.js";

export type { components, paths };
export type Schemas = components["schemas"];

type Method = "get" | "post" | "patch" | "delete";
type Op<P extends keyof paths, M extends Method> = NonNullable<paths[P][M]>;
type JsonOf<R> = R extends { content: { "application/json": infer J } } ? J : never;
type Success<O> = O extends { responses: infer R }
  ? R extends { 200: infer A }
    ? A
    : R extends { 201: infer A }
      ? A
      : R extends { 202: infer A }
        ? A
        : never
  : never;

/** The query parameters of an operation. */
export type QueryOf<P extends keyof paths, M extends Method> =
  Op<P, M> extends { parameters: { query?: infer Q } } ? NonNullable<Q> : never;
/** The JSON request body of an operation. */
export type BodyOf<P extends keyof paths, M extends Method> =
  Op<P, M> extends {
    requestBody?: { content: { "application/json": infer B } };
  }
    ? B
    : never;
/** The `data` of an operation's success response. */
export type DataOf<P extends keyof paths, M extends Method> =
  JsonOf<Success<Op<P, M>>> extends { data: infer D } ? D : never;
/** One item of a list operation's `data`. */
export type ItemOf<P extends keyof paths, M extends Method> = DataOf<P, M> extends (infer T)[] ? T : never;

export type Account = Schemas["Account"];
export type ApiKey = Schemas["ApiKey"];
export type CreatedApiKey = Schemas["CreatedApiKey"];
export type Inbox = Schemas["Inbox"];
export type Message = Schemas["Message"];
export type MessageListItem = ItemOf<"/v1/inboxes/{inbox_id}/messages", "get">;
export type Thread = Schemas["Thread"];
export type ThreadWithMessages = Schemas["ThreadWithMessages"];
export type Webhook = Schemas["Webhook"];
export type WebhookWithSecret = Schemas["WebhookWithSecret"];
export type WebhookDelivery = Schemas["WebhookDelivery"];
export type MailbotEvent = Schemas["Event"];
export type EventType = MailbotEvent["type"];
export type Domain = Schemas["Domain"];
export type AuditEntry = Schemas["AuditEntry"];
export type Usage = Schemas["Usage"];
export type Registration = Schemas["Registration"];
export type ApiErrorBody = Schemas["Error"];

/** One page of a list: its items and the cursor of the next page (null on the last). */
export interface Page<T> {
  data: T[];
  nextCursor: string | null;
  limit: number | null;
}
