import { z } from "@hono/zod-openapi";

export const ReputationWire = z
  .object({
    window_days: z.number().int().openapi({ example: 7 }),
    sent: z
      .number()
      .int()
      .openapi({ description: "Recipients sent to in the window (accepted or refused by the receiving side)" }),
    bounced: z.number().int().openapi({ description: "Hard bounces in the window" }),
    soft_bounced: z.number().int(),
    complained: z.number().int(),
    bounce_rate: z.number().openapi({ description: "bounced / sent, a fraction (0.1 = 10 %)", example: 0.02 }),
    complaint_rate: z.number().openapi({ description: "complained / sent, a fraction", example: 0 }),
    status: z.enum(["ok", "warning", "disabled"]),
    disabled_reason: z.enum(["deactivated", "bounce_rate", "complaint_rate"]).nullable(),
    warnings: z.array(z.string()).openapi({ example: ["bounce_rate_approaching_threshold"] }),
    thresholds: z.object({
      bounce_rate: z.number().openapi({ example: 0.1 }),
      complaint_rate: z.number().openapi({ example: 0.003 }),
      bounce_rate_warning: z.number(),
      complaint_rate_warning: z.number(),
      min_sends: z.number().int().openapi({ description: "Sends in the window before a rate can disable the inbox" }),
    }),
  })
  .openapi("Reputation");
