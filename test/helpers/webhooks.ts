import { env } from "cloudflare:workers";
import { expect, vi } from "vitest";
import { call } from "./api";

/** What the test receiver (test/global/webhook-receiver.ts) recorded of one delivery. */
export interface ReceivedDelivery {
  headers: Record<string, string>;
  body: string;
  answered: number | "hang";
  at: number;
  standardwebhooks: boolean | null;
  node: boolean | null;
  python: boolean | "skipped" | null;
}

export type Step = { status: number; retryAfter?: string } | { hangMs: number };

/** One named hook on the shared test receiver: its URL, its script, what it got. */
export function receiver(name = `h${crypto.randomUUID().slice(0, 8)}`) {
  const base = env.TEST_WEBHOOK_RECEIVER;
  return {
    name,
    url: `${base}/hooks/${name}`,
    async configure(input: { secret?: string; steps?: Step[] }) {
      const res = await fetch(`${base}/control/${name}`, { method: "PUT", body: JSON.stringify(input) });
      if (!res.ok) throw new Error(`receiver control failed: ${res.status}`);
    },
    async deliveries(): Promise<ReceivedDelivery[]> {
      const res = await fetch(`${base}/control/${name}`);
      return ((await res.json()) as { deliveries: ReceivedDelivery[] }).deliveries;
    },
    /** Waits until `predicate` holds over the deliveries so far; returns them. */
    async waitFor(predicate: (d: ReceivedDelivery[]) => boolean, timeout = 20_000): Promise<ReceivedDelivery[]> {
      return vi.waitFor(
        async () => {
          const d = await this.deliveries();
          if (!predicate(d)) throw new Error(`receiver ${name}: condition not met yet (${d.length} deliveries)`);
          return d;
        },
        { timeout, interval: 100 },
      );
    },
  };
}

/** Whether python3 exists where the receiver runs. */
export async function receiverHasPython(): Promise<boolean> {
  const res = await fetch(`${env.TEST_WEBHOOK_RECEIVER}/control/_info`);
  return ((await res.json()) as { python: boolean }).python;
}

/** The event a delivery carried. */
export function eventOf(d: ReceivedDelivery): { id: string; type: string; data: Record<string, unknown> } {
  return JSON.parse(d.body);
}

/** Creates an endpoint on the test receiver and waits for its first (test) delivery. */
export async function endpointOnReceiver(key: string, body: Record<string, unknown> = {}) {
  const hook = receiver();
  const res = await call("POST", "/v1/webhooks", { key, body: { url: hook.url, ...body } });
  expect(res.status, res.text).toBe(201);
  await hook.configure({ secret: res.body.data.secret });
  await hook.waitFor((d) => d.some((x) => eventOf(x).type === "webhook.test"));
  return { hook, webhook: res.body.data as { id: string; secret: string; url: string } };
}
