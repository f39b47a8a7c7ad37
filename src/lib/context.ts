import type { Db } from "../db/client";
import type { Bindings } from "../env";

export type ActorType = "api_key" | "admin" | "system" | "mcp" | "dashboard";

export interface Actor {
  type: ActorType;
  id: string | null;
}

/** Everything a service verb needs; adapters (routes, email, queues, MCP) build one per call. */
export interface ServiceContext {
  accountId: string;
  actor: Actor;
  requestId: string | null;
  db: Db;
  env: Bindings;
  now: () => number;
  /** The key's inbox restriction, when the caller is a restricted key. */
  inboxIds?: string[] | null;
}
