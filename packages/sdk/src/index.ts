// @mailbot/sdk: a typed client for the mailbot API (fetch only: Node >= 20, Workers, browsers).
export * from "./client.js";
export * from "./errors.js";
export { type ClientOptions, ListRequest, parseRetryAfter } from "./http.js";
export { EventStream, parseSse, type StreamOptions } from "./sse.js";
export type * from "./types.js";
export * from "./webhook-signature.js";
