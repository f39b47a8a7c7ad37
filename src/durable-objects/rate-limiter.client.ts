import type { Bindings } from "../env";
import { delayedStub } from "../lib/bench";

/** The one client that names the RateLimiter namespace. */
export function rateLimiter(env: Bindings, subject: string) {
  return delayedStub(env, env.RATE_LIMITER.getByName(subject));
}

/** The limiter that is also the liveness authority of one API key. */
export function keyGuard(env: Bindings, keyId: string) {
  return rateLimiter(env, `key:${keyId}`);
}
