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

/** `sender_rules` entries: an address (`+tag` and case folded) or a domain (its subdomains too). */
const SenderRule = z
  .string()
  .trim()
  .toLowerCase()
  .min(3)
  .max(320)
  .regex(/^(@?[a-z0-9.-]+\.[a-z]{2,}|[^\s@]{1,64}@[a-z0-9.-]+\.[a-z]{2,})$/, "An address or a domain");

export const SenderRulesWire = z
  .object({
    allow: z.array(SenderRule).max(500).default([]),
    block: z.array(SenderRule).max(500).default([]),
  })
  .strict()
  .openapi("SenderRules", {
    description:
      "Per-inbox sender lists (addresses or domains). Blocked senders are refused (mode `reject`) or quarantined; allowed senders skip quarantine and refusal but are still screened.",
  });

export const ScreeningPolicyWire = z
  .object({
    mode: z.enum(["flag", "quarantine", "reject"]).default("flag").openapi({
      description:
        "`flag`: store and mark. `quarantine`: suspicious or dangerous mail gets label `quarantine`, hidden from lists, `wait` and MCP until released. `reject`: dangerous mail is refused at SMTP time (422 on the relay), suspicious mail is quarantined.",
    }),
  })
  .strict()
  .openapi("InboxScreeningPolicy");

export const AutoReplyLimit = z.number().int().min(1).max(100).openapi({
  description:
    "Automatic replies allowed per thread per hour before a send is refused with `loop_suspected` (default 5).",
});

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
    screening: ScreeningPolicyWire.optional(),
    sender_rules: SenderRulesWire.optional(),
    auto_reply_limit: AutoReplyLimit.optional(),
  })
  .strict()
  .openapi("CreateInboxInput");

export const PatchInboxInput = z
  .object({
    display_name: DisplayName.nullable().optional(),
    labels: z.array(Label).max(20).optional(),
    screening: ScreeningPolicyWire.optional(),
    sender_rules: SenderRulesWire.optional().openapi({ description: "Replaces both lists." }),
    auto_reply_limit: AutoReplyLimit.optional(),
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
    screening: z.object({ mode: z.enum(["flag", "quarantine", "reject"]) }),
    sender_rules: z.object({ allow: z.array(z.string()), block: z.array(z.string()) }),
    auto_reply_limit: z.number().int(),
    created_at: Timestamp,
    updated_at: Timestamp,
  })
  .openapi("Inbox");

export const InboxIdParam = z.object({
  inbox_id: z.string().openapi({ param: { name: "inbox_id", in: "path" } }),
});
