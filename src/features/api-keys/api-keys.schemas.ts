import { z } from "@hono/zod-openapi";
import { Timestamp } from "../../lib/wire";

export const SCOPES = ["full", "read", "send", "manage"] as const;

export const CreateKeyInput = z
  .object({
    name: z.string().trim().min(1).max(100).openapi({ example: "support-agent" }),
    scopes: z.array(z.enum(SCOPES)).min(1).max(4).default(["full"]),
    inbox_ids: z.array(z.string().min(1).max(64)).min(1).max(100).nullable().optional().openapi({
      description: "Restrict the key to these inboxes of the account.",
    }),
  })
  .strict()
  .openapi("CreateApiKeyInput");

export const ApiKeyWire = z
  .object({
    id: z.string().openapi({ example: "key_01jd2x0000000000000000000" }),
    name: z.string(),
    prefix: z.string().openapi({ example: "mb_7Gk2a" }),
    scopes: z.array(z.string()),
    inbox_ids: z.array(z.string()).nullable(),
    created_at: Timestamp,
    last_used_at: Timestamp.nullable(),
    revoked_at: Timestamp.nullable(),
  })
  .openapi("ApiKey");

export const CreatedApiKeyWire = ApiKeyWire.extend({
  key: z.string().openapi({ description: "The secret key. Shown only in this response." }),
}).openapi("CreatedApiKey");

export const KeyIdParam = z.object({
  key_id: z.string().openapi({ param: { name: "key_id", in: "path" } }),
});
