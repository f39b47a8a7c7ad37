import { pageOf, toPage } from "../../lib/pagination";
import { defineTool } from "../../mcp/define-tool";
import { AuditQuery } from "./audit.schemas";
import { auditFilters, listAudit, toAuditWire } from "./audit.service";

/** MCP tools of the audit feature: same schemas and service verbs as its routes. */
export const auditTools = [
  defineTool({
    name: "list_audit_log",
    title: "Read the audit log",
    description:
      "Lists the account's append-only audit log, newest first (a key restricted to inboxes sees only entries about those inboxes): who did what (actor api_key | admin | system | mcp | dashboard), to which target, with metadata such as the compliance details of a blocked send. Filters: action (e.g. message.send_blocked), inbox_id, since / until (ISO-8601). limit 1–100 (default 20); pass next_cursor back as cursor.",
    scope: "read",
    input: AuditQuery,
    annotations: { readOnlyHint: true, openWorldHint: false },
    run: async ({ ctx }, q) => {
      const rows = await listAudit(ctx, auditFilters(q), toPage(q));
      const { items, nextCursor } = pageOf(rows, q.limit);
      return { items: items.map(toAuditWire), next_cursor: nextCursor };
    },
    summary: (page) =>
      `${page.items.length} audit entr${page.items.length === 1 ? "y" : "ies"}${page.next_cursor ? " (more: pass next_cursor as cursor)" : ""}${page.items
        .map((e) => `\n- ${e.created_at} ${e.action} by ${e.actor.type}`)
        .join("")}`,
  }),
];
