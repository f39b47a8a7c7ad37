import { createExecutionContext } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { expect } from "vitest";
import { worker } from "./db";

const clients: Client[] = [];

/** Closes every client `connect` opened (call it from the test file's afterAll). */
export async function closeMcpClients(): Promise<void> {
  await Promise.all(clients.splice(0).map((c) => c.close()));
}

/** The Worker's fetch, optionally under other vars (MCP_ACCOUNT_ID): no network involved. */
export function workerFetch(vars?: Partial<Cloudflare.Env>) {
  return async (url: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const request = new Request(url, init);
    if (!vars) return exports.default.fetch(request);
    return worker.fetch(
      request as Request<unknown, IncomingRequestCfProperties>,
      { ...env, ...vars },
      createExecutionContext(),
    );
  };
}

/** The official SDK client, connected to /mcp of the Worker under test with a bearer key. */
export async function connect(key: string, vars?: Partial<Cloudflare.Env>): Promise<Client> {
  const client = new Client({ name: "mailbot-test", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL("http://localhost/mcp"), {
    fetch: workerFetch(vars),
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
  });
  await client.connect(transport);
  clients.push(client);
  return client;
}

export interface ToolOutcome {
  isError: boolean;
  // biome-ignore lint/suspicious/noExplicitAny: results are inspected field by field
  data: any;
  text: string;
}

/** Calls a tool; checks the result's shape (summary + JSON text equal to structuredContent). */
export async function tool(client: Client, name: string, args: Record<string, unknown>): Promise<ToolOutcome> {
  const res = await client.callTool({ name, arguments: args });
  const content = res.content as { type: string; text: string }[];
  expect(content).toHaveLength(2);
  expect(content.every((c) => c.type === "text")).toBe(true);
  expect(JSON.parse(content[1]?.text ?? "null")).toEqual(res.structuredContent);
  return { isError: res.isError === true, data: res.structuredContent, text: content.map((c) => c.text).join("\n") };
}
