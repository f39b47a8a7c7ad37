import { z } from "@hono/zod-openapi";
import { Timestamp } from "../../lib/wire";

/** A DNS name we would send from: labels of a-z 0-9 -, at least two, no trailing dot, <= 253. */
const DOMAIN_PATTERN = /^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$/;

export const DomainName = z
  .string()
  .trim()
  .toLowerCase()
  .transform((d) => d.replace(/\.$/, ""))
  .pipe(z.string().regex(DOMAIN_PATTERN, "a domain name such as mail.example.com"))
  .openapi({ example: "mail.example.com" });

export const CreateDomainInput = z.object({ domain: DomainName }).strict().openapi("CreateDomainInput");

export const DomainIdParam = z.object({
  domain_id: z.string().openapi({ param: { name: "domain_id", in: "path" } }),
});

export const DnsRecordWire = z
  .object({
    type: z.enum(["TXT", "MX"]),
    name: z.string(),
    value: z.string(),
    purpose: z.enum(["spf", "dkim", "dmarc", "mx"]),
    status: z.enum(["pending", "verified", "failed"]),
  })
  .openapi("DnsRecord");

export const DomainWire = z
  .object({
    id: z.string().openapi({ example: "dom_01jd2x0000000000000000000" }),
    domain: z.string(),
    status: z.enum(["pending", "verified"]),
    dkim_selector: z.string(),
    dns_records: z.array(DnsRecordWire),
    spf_verified: z.boolean(),
    dkim_verified: z.boolean(),
    dmarc_verified: z.boolean(),
    mx_verified: z.boolean(),
    last_checked_at: Timestamp.nullable(),
    verified_at: Timestamp.nullable(),
    created_at: Timestamp,
    updated_at: Timestamp,
  })
  .openapi("Domain");

export const VerifyResultWire = z
  .object({
    id: z.string(),
    domain: z.string(),
    status: z.enum(["pending", "verified"]),
    spf_verified: z.boolean(),
    dkim_verified: z.boolean(),
    dmarc_verified: z.boolean(),
    mx_verified: z.boolean(),
    next_step: z.string().nullable(),
    dns_records: z.array(DnsRecordWire),
  })
  .openapi("DomainVerification");
