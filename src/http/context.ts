import type { Context } from "hono";
import { type BaseContext, createContext, forAccount, type ServiceContext, SYSTEM_ACTOR } from "../lib/context";
import { Unauthorized } from "../lib/errors";
import type { AppEnv } from "./app-env";

/** The context of a request before any account is known (registration, the inbound relay, auth). */
export function requestContext(c: Context<AppEnv>): BaseContext {
  return createContext(c.env, {
    actor: c.get("actor") ?? SYSTEM_ACTOR,
    requestId: c.get("requestId"),
    d1: c.get("d1Session"),
  });
}

/** The ServiceContext of an authenticated request. */
export function serviceContext(c: Context<AppEnv>): ServiceContext {
  const auth = c.get("auth");
  if (!auth) throw new Unauthorized();
  const base = createContext(c.env, {
    actor: c.get("actor") ?? { type: "api_key", id: auth.key.id },
    requestId: c.get("requestId"),
    d1: c.get("d1Session"),
  });
  return forAccount(base, auth.account.id, auth.inboxIds);
}

/** A ServiceContext acting on a named account (operators). */
export function contextFor(c: Context<AppEnv>, accountId: string): ServiceContext {
  return forAccount(requestContext(c), accountId);
}
