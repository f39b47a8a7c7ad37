import { z } from "@hono/zod-openapi";
import { Timestamp } from "../../lib/wire";
import { CONTROL_CHARS } from "../../mail/address";

const Label = z.string().trim().min(1).max(64);

export const USERNAME_PATTERN = /^[a-z0-9._-]{1,64}$/;

/** The From name of the inbox's mail: no control characters (they would reach the header as they are). */
const DisplayName = z
  .string()
  .trim()
  .min(1)
  .max(100)
  .refine((v) => !CONTROL_CHARS.test(v), "No line breaks or control characters");

export const CreateInboxInput = z
  .object({
    username: z
      .string()
      .trim()
      .toLowerCase()
      .regex(USERNAME_PATTERN, "1–64 characters of a-z 0-9 . _ -")
      .openapi({ example: "support" }),
    domain: z.string().trim().toLowerCase().min(1).max(253).optional(),
    display_name: DisplayName.optional(),
    labels: z.array(Label).max(20).optional(),
  })
  .strict()
  .openapi("CreateInboxInput");

export const PatchInboxInput = z
  .object({
    display_name: DisplayName.nullable().optional(),
    labels: z.array(Label).max(20).optional(),
  })
  .strict()
  .openapi("PatchInboxInput");

export const InboxWire = z
  .object({
    id: z.string().openapi({ example: "inbox_01jd2x0000000000000000000" }),
    username: z.string(),
    domain: z.string(),
    address: z.string().openapi({ example: "support--k3x9m2@mailbot.localhost" }),
    display_name: z.string().nullable(),
    status: z.enum(["active", "disabled"]),
    disabled_reason: z.enum(["deactivated", "bounce_rate", "complaint_rate"]).nullable(),
    labels: z.array(z.string()),
    created_at: Timestamp,
    updated_at: Timestamp,
  })
  .openapi("Inbox");

export const InboxIdParam = z.object({
  inbox_id: z.string().openapi({ param: { name: "inbox_id", in: "path" } }),
});
