import { z } from "@hono/zod-openapi";
import { PageQuery } from "../../lib/pagination";
import { Timestamp } from "../../lib/wire";

const Address = z
  .string()
  .trim()
  .toLowerCase()
  .min(3)
  .max(320)
  .regex(/^[^@\s]+@[^@\s]+$/, "Must be an email address");

export const SuppressionQuery = PageQuery.extend({
  address: Address.optional(),
  reason: z.enum(["hard_bounce", "complaint"]).optional(),
});

export const SuppressionParams = z.object({
  address: Address.openapi({
    param: { name: "address", in: "path" },
    description: "The suppressed address, URL-encoded (`ana%40example.com`).",
    example: "ana@example.com",
  }),
});

export const SuppressionWire = z
  .object({
    id: z.string().openapi({ example: "sup_01jd2x0000000000000000000" }),
    address: z.string(),
    reason: z.enum(["hard_bounce", "complaint"]),
    source: z.string().openapi({ description: "`report` (DSN/ARF mail), `transport` (refused at send) or `relay`" }),
    inbox_id: z.string().nullable(),
    message_id: z.string().nullable().openapi({ description: "The outbound message that bounced or was reported" }),
    detail: z.string().nullable(),
    created_at: Timestamp,
  })
  .openapi("Suppression");
export type SuppressionWire = z.infer<typeof SuppressionWire>;
