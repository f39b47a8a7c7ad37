import { defineTool } from "../../mcp/define-tool";
import { UsageQuery } from "./usage.schemas";
import { getUsage, usagePeriod } from "./usage.service";

/** MCP tools of the usage feature: same schema and service verb as `GET /v1/usage`. */
export const usageTools = [
  defineTool({
    name: "get_usage",
    title: "Get usage and the send limit",
    description:
      "Returns the account's usage over a period (since / until, ISO-8601; default the current UTC month): messages sent and received, hard bounces and complaints, and the send limit now (send_limit: limit, used, window_hours, resets_at; new accounts may send 10 messages per rolling 24 h). Use it before a batch of sends to avoid send_limit_exceeded.",
    scope: "read",
    input: UsageQuery,
    annotations: { readOnlyHint: true, openWorldHint: false },
    run: async ({ ctx }, q) => getUsage(ctx, usagePeriod(q)),
    summary: (u) =>
      `Sent ${u.sent}, received ${u.received}, bounced ${u.bounced}, complained ${u.complained}; send limit ${
        u.send_limit.limit === null
          ? "none"
          : `${u.send_limit.used}/${u.send_limit.limit} per ${u.send_limit.window_hours} h`
      }.`,
  }),
];
