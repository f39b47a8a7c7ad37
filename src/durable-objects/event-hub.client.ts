import type { Bindings } from "../env";
import { delayedStub } from "../lib/bench";
import { log } from "../lib/log";
import type { EventHub } from "./event-hub";

export type { HubConnect, HubRefusal } from "./event-hub";

/** The one client that names the EventHub namespace: one hub per account. */
export function eventHub(env: Bindings, accountId: string): DurableObjectStub<EventHub> {
  return delayedStub(env, env.EVENT_HUB.getByName(accountId));
}

/**
 * Ends the open event streams of a revoked key (or, with keyId null, of a suspended account):
 * a stream outlives the request that authenticated it, so revocation must reach it here.
 * Never throws: the revocation itself is already in force for every new request.
 */
export async function disconnectStreams(
  env: Bindings,
  accountId: string,
  keyId: string | null,
  reason: string,
): Promise<void> {
  try {
    await eventHub(env, accountId).disconnect(keyId, reason);
  } catch (err) {
    log.warn("event hub disconnect failed", { account: accountId, error: String(err) });
  }
}
