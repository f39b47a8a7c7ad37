import { config } from "../config";
import type { Bindings } from "../env";

/**
 * The one seam for the BENCH_* switches the benches (bench/*.mjs) set on a local `wrangler dev`.
 * Outside development (ENVIRONMENT exactly "development") every hook is off, whatever the vars say,
 * so no bench switch can change a production path.
 */
export interface BenchHooks {
  /** BENCH_DNS_DELAY_MS: every sender-authentication DNS lookup waits this long (a cold cache). */
  dnsDelayMs: number;
  /** BENCH_SEND_POLICY = "off": the pre-send policy is skipped, to measure what it adds. */
  skipSendPolicy: boolean;
  /** BENCH_SERVER_TIMING = "on": the reputation check reports its cost in a Server-Timing header. */
  serverTiming: boolean;
  /** BENCH_DO_DELAY_MS: every Durable Object call waits this long first (an object far away). */
  doDelayMs: number;
}

const OFF: BenchHooks = Object.freeze({ dnsDelayMs: 0, skipSendPolicy: false, serverTiming: false, doDelayMs: 0 });

export function benchHooks(env: Bindings): BenchHooks {
  const c = config(env);
  if (!c.isDevelopment) return OFF;
  return {
    dnsDelayMs: c.bench.dnsDelayMs,
    skipSendPolicy: c.bench.sendPolicy === "off",
    serverTiming: c.bench.serverTiming === "on",
    doDelayMs: c.bench.doDelayMs,
  };
}

/**
 * A Durable Object stub whose every call waits BENCH_DO_DELAY_MS first (development only), so a
 * bench can show which paths wait on an object. Without the switch the stub itself is returned.
 */
export function delayedStub<T extends object>(env: Bindings, stub: T): T {
  const ms = benchHooks(env).doDelayMs;
  if (ms <= 0) return stub;
  return new Proxy(stub, {
    get(target, prop) {
      const value = Reflect.get(target, prop);
      if (typeof value !== "function" || prop === "then") return value;
      // Reflect.apply, not value.apply: on an RPC stub every property is a remote method, "apply" too.
      return async (...args: unknown[]) => {
        await scheduler.wait(ms);
        return Reflect.apply(value as (...a: unknown[]) => unknown, target, args);
      };
    },
  });
}
