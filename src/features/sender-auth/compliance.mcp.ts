import { defineTool } from "../../mcp/define-tool";
import { ComplianceQuery } from "./compliance.schemas";
import { checkCompliance, toComplianceWire } from "./compliance.service";

/** MCP tools of the compliance feature: the send gate's view of a domain. */
export const complianceTools = [
  defineTool({
    name: "check_compliance",
    title: "Check a domain's sender authentication",
    description:
      "Checks SPF, DKIM, DMARC and MX of a domain exactly as the send gate sees them: each { status: pass | fail | missing, found, expected, problem } and send_allowed. domain is the shared mail domain (the part after @ in a shared inbox address) or one of the account's domains. Sends from a domain whose SPF, DKIM or DMARC does not pass are blocked (send_blocked). A temporary DNS failure is dns_unavailable (retry later).",
    scope: "read",
    input: ComplianceQuery,
    annotations: { readOnlyHint: true, openWorldHint: true },
    run: async ({ ctx }, { domain }) => toComplianceWire(await checkCompliance(ctx, domain)),
    summary: (r) =>
      `${r.domain}: spf ${r.spf.status}, dkim ${r.dkim.status}, dmarc ${r.dmarc.status}, mx ${r.mx.status}; sending ${r.send_allowed ? "allowed" : "blocked"}.`,
  }),
];
