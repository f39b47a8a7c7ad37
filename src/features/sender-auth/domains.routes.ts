import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../http/app-env";
import { requireScope } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { idempotent } from "../../http/idempotency";
import { jsonBody, jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { PageQuery, pageOf, toPage } from "../../lib/pagination";
import { CreateDomainInput, DomainIdParam, DomainWire, VerifyResultWire } from "./domains.schemas";
import { addDomain, deleteDomain, getDomain, listDomains, toDomainWire, verifyDomain } from "./domains.service";

const tags = ["Domains"];

export const domainRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

domainRoutes.use("/domains", idempotent);

domainRoutes.openapi(
  jsonRoute({
    request: { body: jsonBody(CreateDomainInput) },
    method: "post",
    path: "/domains",
    tags,
    summary: "Add a sending domain (generates its DKIM key; returns the DNS records to publish)",
    data: DomainWire,
    status: 201,
    idempotent: true,
    errors: { 409: "The domain is already one of yours" },
  }),
  async (c) => {
    requireScope(c, "manage");
    const row = await addDomain(serviceContext(c), c.req.valid("json"));
    return c.json({ data: toDomainWire(c.env, row) }, 201);
  },
);

domainRoutes.openapi(
  jsonRoute({
    request: { query: PageQuery },
    method: "get",
    path: "/domains",
    tags,
    summary: "List domains",
    data: DomainWire,
    list: true,
  }),
  async (c) => {
    requireScope(c, "read");
    const query = c.req.valid("query");
    const { items, nextCursor } = pageOf(await listDomains(serviceContext(c), toPage(query)), query.limit);
    return c.json(
      { data: items.map((r) => toDomainWire(c.env, r)), meta: { limit: query.limit, next_cursor: nextCursor } },
      200,
    );
  },
);

domainRoutes.openapi(
  jsonRoute({
    request: { params: DomainIdParam },
    method: "get",
    path: "/domains/{domain_id}",
    tags,
    summary: "Get a domain",
    data: DomainWire,
  }),
  async (c) => {
    requireScope(c, "read");
    const row = await getDomain(serviceContext(c), c.req.valid("param").domain_id);
    return c.json({ data: toDomainWire(c.env, row) }, 200);
  },
);

domainRoutes.openapi(
  jsonRoute({
    request: { params: DomainIdParam },
    method: "post",
    path: "/domains/{domain_id}/verify",
    tags,
    summary: "Check the domain's DNS records live; SPF, DKIM and DMARC passing verify it",
    data: VerifyResultWire,
    errors: { 409: "Verified by another account meanwhile", 503: "DNS could not be queried right now (retry)" },
  }),
  async (c) => {
    requireScope(c, "manage");
    const result = await verifyDomain(serviceContext(c), c.req.valid("param").domain_id);
    return c.json({ data: result }, 200);
  },
);

domainRoutes.openapi(
  jsonRoute({
    request: { params: DomainIdParam },
    method: "delete",
    path: "/domains/{domain_id}",
    tags,
    summary: "Remove a domain (refused while inboxes use it)",
    data: DomainWire,
    errors: { 409: "Inboxes still use the domain" },
  }),
  async (c) => {
    requireScope(c, "manage");
    const row = await deleteDomain(serviceContext(c), c.req.valid("param").domain_id);
    return c.json({ data: toDomainWire(c.env, row) }, 200);
  },
);
