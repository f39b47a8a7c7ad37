import { z } from "@hono/zod-openapi";
import { DomainName } from "./domains.schemas";

export const ComplianceQuery = z.object({
  domain: DomainName.openapi({ param: { name: "domain", in: "query" }, example: "mail.example.com" }),
});

export const CheckWire = z
  .object({
    status: z.enum(["pass", "fail", "missing"]),
    found: z.array(z.string()).nullable(),
    expected: z.string(),
    problem: z.string().nullable(),
  })
  .openapi("ComplianceCheck");

export const ComplianceWire = z
  .object({
    domain: z.string(),
    spf: CheckWire,
    dkim: CheckWire,
    dmarc: CheckWire,
    mx: CheckWire,
    send_allowed: z.boolean(),
  })
  .openapi("ComplianceReport");

export const ReadinessWire = z
  .object({
    inbox_id: z.string(),
    domain: z.string(),
    score: z.number().int().min(0).max(100),
    send_allowed: z.boolean(),
    checks: z.array(
      z.object({
        name: z.string(),
        passed: z.boolean(),
        points: z.number().int(),
        max_points: z.number().int(),
        detail: z.string(),
      }),
    ),
  })
  .openapi("Readiness");
