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
}

const OFF: BenchHooks = Object.freeze({ dnsDelayMs: 0, skipSendPolicy: false, serverTiming: false });

export function benchHooks(env: Bindings): BenchHooks {
  const c = config(env);
  if (!c.isDevelopment) return OFF;
  return {
    dnsDelayMs: c.bench.dnsDelayMs,
    skipSendPolicy: c.bench.sendPolicy === "off",
    serverTiming: c.bench.serverTiming === "on",
  };
}
