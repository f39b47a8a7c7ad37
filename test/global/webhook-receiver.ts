/**
 * A real HTTP webhook receiver for the test run (vitest globalSetup, in Node, on 127.0.0.1).
 * Tests script it per path (`PUT /control/<name>` with the endpoint's secret and the answers
 * to give: 500, a timeout, 429 with Retry-After, 410, then 200) and read back what arrived
 * (`GET /control/<name>`). Every delivery is verified here three ways, all independent of the
 * Worker's code: the `standardwebhooks` npm library, the Node snippet from docs/webhooks.md and
 * the Python snippet from the same doc (run with python3 when it exists).
 */
import { execFileSync } from "node:child_process";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { Webhook } from "standardwebhooks";
import type { TestProject } from "vitest/node";
import { verifyMailbotSignature, verifyStandardWebhook } from "../../examples/webhooks/verify.mjs";

declare module "vitest" {
  interface ProvidedContext {
    webhookReceiverPort: number;
  }
}

/** One scripted answer: a status (with optional Retry-After) or a hang past the Worker's timeout. */
type Step = { status: number; retryAfter?: string } | { hangMs: number };

interface Delivery {
  headers: Record<string, string>;
  body: string;
  raw: Buffer;
  answered: number | "hang";
  at: number;
  standardwebhooks: boolean | null;
  node: boolean | null;
  /** null: not verified yet; "skipped": python3 is absent on this machine. */
  python: boolean | "skipped" | null;
}

interface Scenario {
  secret: string | null;
  steps: Step[];
  deliveries: Delivery[];
}

const PYTHON_SNIPPET = path.resolve(import.meta.dirname, "../../examples/webhooks/verify.py");
const PYTHON_HARNESS = `
import json, sys
exec(open(sys.argv[1]).read())
d = json.load(sys.stdin)
body = d["body"].encode()
print(json.dumps(verify_standard_webhook(d["secret"], d["headers"], body) and verify_mailbot_signature(d["secret"], d["headers"], body)))
`;

function hasPython(): boolean {
  try {
    execFileSync("python3", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function runPython(secret: string, headers: Record<string, string>, body: string): boolean {
  try {
    const out = execFileSync("python3", ["-c", PYTHON_HARNESS, PYTHON_SNIPPET], {
      input: JSON.stringify({ secret, headers, body }),
    });
    return out.toString().trim() === "true";
  } catch {
    return false;
  }
}

const python = hasPython();

/** The three independent checks of one delivery. */
function verify(secret: string, d: Delivery): void {
  try {
    new Webhook(secret).verify(d.body, d.headers);
    d.standardwebhooks = true;
  } catch {
    d.standardwebhooks = false;
  }
  d.node = verifyStandardWebhook(secret, d.headers, d.raw) && verifyMailbotSignature(secret, d.headers, d.raw);
  d.python = python ? runPython(secret, d.headers, d.body) : "skipped";
}

export default async function setup(project: TestProject) {
  const scenarios = new Map<string, Scenario>();
  const scenario = (name: string) => {
    let s = scenarios.get(name);
    if (!s) {
      s = { secret: null, steps: [], deliveries: [] };
      scenarios.set(name, s);
    }
    return s;
  };

  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const body = await readBody(req);
    const json = (status: number, value: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(value));
    };
    if (url.pathname === "/control/_info") return json(200, { python });
    const control = /^\/control\/([\w-]+)$/.exec(url.pathname);
    if (control?.[1]) {
      const s = scenario(control[1]);
      if (req.method === "PUT") {
        const input = JSON.parse(body.toString() || "{}") as { secret?: string; steps?: Step[] };
        if (input.secret !== undefined) s.secret = input.secret;
        if (input.steps !== undefined) s.steps = input.steps;
        return json(200, { ok: true });
      }
      // Verified when read, with the secret the test registered (a delivery may arrive before
      // the test knows the secret: the creation response and the first test event race).
      if (s.secret) for (const d of s.deliveries) if (d.standardwebhooks === null) verify(s.secret, d);
      return json(200, { deliveries: s.deliveries.map(({ raw: _raw, ...d }) => d) });
    }
    const hook = /^\/hooks\/([\w-]+)$/.exec(url.pathname);
    if (!hook?.[1] || req.method !== "POST") return json(404, { error: "no such hook" });
    const s = scenario(hook[1]);
    const headers = Object.fromEntries(
      Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(", ") : (v ?? "")]),
    );
    const step = s.steps.shift() ?? { status: 200 };
    s.deliveries.push({
      headers,
      body: body.toString("utf8"),
      raw: body,
      answered: "hangMs" in step ? "hang" : step.status,
      at: Date.now(),
      standardwebhooks: null,
      node: null,
      python: null,
    });
    if ("hangMs" in step) {
      setTimeout(() => json(200, { late: true }), step.hangMs);
      return;
    }
    res.writeHead(step.status, {
      "content-type": "text/plain",
      ...(step.retryAfter ? { "retry-after": step.retryAfter } : {}),
    });
    res.end(step.status >= 400 ? `scripted ${step.status}` : "ok");
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  project.provide("webhookReceiverPort", (server.address() as AddressInfo).port);
  return async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  };
}
