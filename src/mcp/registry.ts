import { auditTools } from "../features/audit/audit.mcp";
import { eventTools } from "../features/events/events.mcp";
import { inboxTools } from "../features/inboxes/inboxes.mcp";
import { messageTools } from "../features/messages/messages.mcp";
import { complianceTools } from "../features/sender-auth/compliance.mcp";
import { domainTools } from "../features/sender-auth/domains.mcp";
import { threadTools } from "../features/threads/threads.mcp";
import { usageTools } from "../features/usage/usage.mcp";
import type { McpTool } from "./define-tool";

/**
 * Every tool /mcp serves, in the order clients list them. A feature adds its tools in its own
 * `<feature>.mcp.ts` (an array of defineTool(...)) and one spread here.
 */
export const TOOLS: McpTool[] = [
  ...inboxTools,
  ...messageTools,
  ...threadTools,
  ...eventTools,
  ...usageTools,
  ...domainTools,
  ...complianceTools,
  ...auditTools,
];
