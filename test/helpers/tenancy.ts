import { expect } from "vitest";
import { call, expectError } from "./api";

/**
 * The tenancy proof shared by every feature: for EVERY operation in the OpenAPI document whose
 * path has an id parameter (operator routes aside), account B using account A's ids gets 404
 * and not one byte of A's data. A new route with a new id parameter fails this check until a
 * fixture for that parameter is registered here, so no route can skip it.
 */
export type IdFixtures = Record<string, string>;

/** Sample bodies so validation passes and the ownership check is what answers. */
const SAMPLE_BODIES: Record<string, unknown> = {
  "PATCH /v1/inboxes/{inbox_id}": { display_name: "hijacked" },
  "PATCH /v1/inboxes/{inbox_id}/messages/{message_id}": { labels: ["hijacked"] },
  "POST /v1/inboxes/{inbox_id}/messages": { to: ["hijack@example.org"], subject: "hijacked", body_text: "x" },
  "POST /v1/messages/{message_id}/reply": { body_text: "hijacked" },
  "POST /v1/messages/{message_id}/forward": { to: ["hijack@example.org"] },
  "PATCH /v1/webhooks/{webhook_id}": { description: "hijacked" },
  "POST /v1/events/{event_id}/replay": {},
};

/** Required query parameters, for the same reason. */
const SAMPLE_QUERIES: Record<string, string> = {
  "GET /v1/inboxes/{inbox_id}/messages/search": "?q=hello",
  "GET /v1/inboxes/{inbox_id}/messages/wait": "?timeout_ms=0",
};

export interface TenancyResult {
  checked: string[];
}

export async function expectTenancyOnEveryIdRoute(
  owner: { ids: IdFixtures; secrets: string[] },
  intruderKey: string,
): Promise<TenancyResult> {
  const doc = await call("GET", "/openapi.json");
  expect(doc.status).toBe(200);
  const checked: string[] = [];
  for (const [path, ops] of Object.entries(doc.body.paths as Record<string, Record<string, unknown>>)) {
    if (!path.includes("{") || path.startsWith("/v1/admin/")) continue;
    for (const method of Object.keys(ops)) {
      const url = path.replace(/\{(\w+)\}/g, (_, name: string) => {
        const id = owner.ids[name];
        if (!id) throw new Error(`tenancy: no fixture for path parameter "${name}" (${method.toUpperCase()} ${path})`);
        return id;
      });
      const label = `${method.toUpperCase()} ${path}`;
      const body = SAMPLE_BODIES[label] ?? (method === "get" || method === "delete" ? undefined : {});
      const res = await call(method.toUpperCase(), url + (SAMPLE_QUERIES[label] ?? ""), { key: intruderKey, body });
      expectError(res, 404, "not_found");
      for (const secret of [...Object.values(owner.ids), ...owner.secrets]) {
        expect(res.text, `${label} leaked ${secret}`).not.toContain(secret);
      }
      checked.push(label);
    }
  }
  return { checked };
}
