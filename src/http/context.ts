import type { Context } from "hono";
import { createDb } from "../db/client";
import type { AppEnv } from "../env";
import type { ServiceContext } from "../lib/context";
import { Unauthorized } from "../lib/errors";

/** The ServiceContext of an authenticated request. */
export function serviceContext(c: Context<AppEnv>): ServiceContext {
  const auth = c.get("auth");
  if (!auth) throw new Unauthorized();
  return {
    accountId: auth.account.id,
    actor: c.get("actor") ?? { type: "api_key", id: auth.key.id },
    requestId: c.get("requestId"),
    db: createDb(c.env.DB),
    env: c.env,
    now: Date.now,
    inboxIds: auth.inboxIds,
  };
}

/** A ServiceContext acting on a named account (operators, system jobs). */
export function contextFor(c: Context<AppEnv>, accountId: string): ServiceContext {
  return {
    accountId,
    actor: c.get("actor") ?? { type: "system", id: null },
    requestId: c.get("requestId"),
    db: createDb(c.env.DB),
    env: c.env,
    now: Date.now,
  };
}
