import { PageQuery, pageOf, toPage } from "../../lib/pagination";
import { defineTool, IDEMPOTENCY_NOTE, IdempotencyKeyArg } from "../../mcp/define-tool";
import { CreateDomainInput, DomainIdParam } from "./domains.schemas";
import { addDomain, listDomains, toDomainWire, verifyDomain } from "./domains.service";

/** MCP tools of the domains feature: same schemas and service verbs as its routes. */
export const domainTools = [
  defineTool({
    name: "add_domain",
    title: "Add a sending domain",
    description: `Adds a custom sending domain to the account and generates its DKIM key (selector "default"). Returns the domain in status pending with dns_records: the SPF, DKIM, DMARC and MX records to publish at the domain's DNS host; then call verify_domain. A domain another account holds verified can be added, and taken over only by verifying it with this account's own DKIM record published (a fresh proof releases the stale claim). Keys restricted to inboxes cannot manage domains. ${IDEMPOTENCY_NOTE}`,
    scope: "manage",
    input: CreateDomainInput.safeExtend({ idempotency_key: IdempotencyKeyArg }),
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    idempotent: { path: () => "/v1/domains", pathParams: [], status: 201 },
    run: async ({ ctx }, { idempotency_key: _, ...input }) => toDomainWire(ctx.env, await addDomain(ctx, input)),
    summary: (d) =>
      `Added ${d.domain} (${d.id}), status ${d.status}. Publish: ${d.dns_records.map((r) => `${r.type} ${r.name}`).join("; ")}.`,
  }),
  defineTool({
    name: "verify_domain",
    title: "Verify a domain's DNS records",
    description:
      "Looks up the domain's SPF, DKIM and DMARC (and MX) records live. All three gate records passing make the domain verified, so inboxes can be created on it (create_inbox with domain). Returns each flag and next_step. A temporary DNS failure decides nothing (dns_unavailable: retry later).",
    scope: "manage",
    input: DomainIdParam,
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: true },
    run: async ({ ctx }, { domain_id }) => verifyDomain(ctx, domain_id),
    summary: (r) =>
      `Domain is ${r.status}: spf ${r.spf_verified}, dkim ${r.dkim_verified}, dmarc ${r.dmarc_verified}, mx ${r.mx_verified}.`,
  }),
  defineTool({
    name: "list_domains",
    title: "List domains",
    description:
      "Lists the account's custom domains, newest first, with status and the DNS records to publish. limit 1–100 (default 20); pass next_cursor back as cursor.",
    scope: "read",
    input: PageQuery,
    annotations: { readOnlyHint: true, openWorldHint: false },
    run: async ({ ctx }, query) => {
      const { items, nextCursor } = pageOf(await listDomains(ctx, toPage(query)), query.limit);
      return { items: items.map((row) => toDomainWire(ctx.env, row)), next_cursor: nextCursor };
    },
    summary: (page) =>
      `${page.items.length} domain(s)${page.next_cursor ? " (more: pass next_cursor as cursor)" : ""}: ${page.items
        .map((d) => `${d.domain} (${d.status})`)
        .join(", ")}`,
  }),
];
