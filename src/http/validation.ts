import type { Hook } from "@hono/zod-openapi";
import { ValidationFailed } from "../lib/errors";
import type { AppEnv } from "./app-env";
import { fieldIssues } from "./errors";

/** zod-openapi's hook: a failed parse becomes the 422 envelope with per-field details. */
// biome-ignore lint/suspicious/noExplicitAny: the hook is shared by routes of every input shape
export const validationHook: Hook<any, AppEnv, any, any> = (result) => {
  if (!result.success) throw new ValidationFailed(fieldIssues(result.error));
};
