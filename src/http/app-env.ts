import type { Bindings } from "../env";
import type { AccountRow, ApiKeyRow } from "../features/api-keys/key-auth";
import type { Actor } from "../lib/context";

/** What the authentication middleware leaves on the request context. */
export interface AuthState {
  account: AccountRow;
  key: ApiKeyRow;
  scopes: string[];
  inboxIds: string[] | null;
}

export interface Variables {
  requestId: string;
  auth?: AuthState;
  actor?: Actor;
  /** The request's D1 session (http/d1-session.ts); every context of the request uses it. */
  d1Session?: D1DatabaseSession;
}

export interface AppEnv {
  Bindings: Bindings;
  Variables: Variables;
}
