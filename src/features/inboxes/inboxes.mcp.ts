import { PageQuery, pageOf, toPage } from "../../lib/pagination";
import { defineTool, IDEMPOTENCY_NOTE, IdempotencyKeyArg } from "../../mcp/define-tool";
import { CreateInboxInput, InboxIdParam } from "./inboxes.schemas";
import { createInbox, getInbox, listInboxes, toInboxWire } from "./inboxes.service";

/** MCP tools of the inboxes feature: same schemas and service verbs as its routes. */
export const inboxTools = [
  defineTool({
    name: "create_inbox",
    title: "Create an inbox",
    description: `Creates an email inbox on the shared domain ({username}--{account}@domain), or with domain on one of the account's verified domains ({username}@domain), and returns it with its address. username: 1–64 of a-z 0-9 . _ - (lower-cased). Limited by the account's tier (inbox_limit_reached); a taken address is address_taken. Keys restricted to inboxes cannot create inboxes. ${IDEMPOTENCY_NOTE}`,
    scope: "manage",
    input: CreateInboxInput.safeExtend({ idempotency_key: IdempotencyKeyArg }),
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    idempotent: { path: () => "/v1/inboxes", pathParams: [], status: 201 },
    run: async ({ ctx, auth }, { idempotency_key: _, ...input }) =>
      toInboxWire(await createInbox(ctx, auth.account, input)),
    summary: (inbox) => `Created inbox ${inbox.address} (${inbox.id}).`,
  }),
  defineTool({
    name: "list_inboxes",
    title: "List inboxes",
    description:
      "Lists the account's inboxes (only the key's inboxes for a restricted key), newest first. limit 1–100 (default 20); pass next_cursor back as cursor for the next page.",
    scope: "read",
    input: PageQuery,
    annotations: { readOnlyHint: true, openWorldHint: false },
    run: async ({ ctx }, query) => {
      const { items, nextCursor } = pageOf(await listInboxes(ctx, toPage(query)), query.limit);
      return { items: items.map(toInboxWire), next_cursor: nextCursor };
    },
    summary: (page) =>
      `${page.items.length} inbox(es)${page.next_cursor ? " (more: pass next_cursor as cursor)" : ""}: ${page.items.map((i) => i.address).join(", ")}`,
  }),
  defineTool({
    name: "get_inbox",
    title: "Get an inbox",
    description: "Returns one inbox: address, status (active | disabled), disabled_reason, labels.",
    scope: "read",
    input: InboxIdParam,
    annotations: { readOnlyHint: true, openWorldHint: false },
    run: async ({ ctx }, { inbox_id }) => toInboxWire(await getInbox(ctx, inbox_id)),
    summary: (inbox) => `Inbox ${inbox.address} (${inbox.id}) is ${inbox.status}.`,
  }),
];
