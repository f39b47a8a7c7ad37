import { OpenAPIHono } from "@hono/zod-openapi";
import { config } from "../../config";
import { rateLimiter } from "../../durable-objects/rate-limiter.client";
import type { AppEnv } from "../../http/app-env";
import { checkAdminBearer, clientAddress, requireFullAccess, requireScope } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { idempotent } from "../../http/idempotency";
import { jsonBody, jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { createContext, SYSTEM_ACTOR } from "../../lib/context";
import { Forbidden, RateLimited } from "../../lib/errors";
import { HOUR_MS } from "../../lib/time";
import { toInboxWire } from "../inboxes/inboxes.service";
import { AccountPatch, AccountWire, RegisterInput, RegisterResult } from "./accounts.schemas";
import { closeAccount, getAccount, patchAccount, register, toAccountWire } from "./accounts.service";

/** Public: registration (open, or operator-only when REGISTRATION is not "open"). */
export const registrationRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

registrationRoutes.use("/auth/register", idempotent);

registrationRoutes.openapi(
  jsonRoute({
    request: { body: jsonBody(RegisterInput) },
    method: "post",
    path: "/auth/register",
    tags: ["Accounts"],
    summary: "Register an account: returns its first API key (shown once) and a sandbox inbox",
    description:
      "Open when the deployment sets REGISTRATION=open (the local default). Otherwise it requires the operator's ADMIN_TOKEN as the bearer.",

    data: RegisterResult,
    status: 201,
    idempotent: true,
    security: "none",
  }),
  async (c) => {
    const admin = await checkAdminBearer(c);
    if (config(c.env).registration !== "open" && !admin) {
      throw new Forbidden("registration_closed", "Registration is closed on this deployment; ask its operator.");
    }
    const perHour = config(c.env).registrationsPerHour;
    if (!admin && perHour > 0) {
      const decision = await rateLimiter(c.env, `register:${clientAddress(c)}`).hit({
        limit: perHour,
        windowMs: HOUR_MS,
      });
      if (!decision.allowed) {
        throw new RateLimited(
          "rate_limited",
          "Too many registrations from this address.",
          decision.retryAfterMs / 1000,
        );
      }
    }
    const { account, key, inbox } = await register(
      createContext(c.env, {
        actor: admin ? { type: "admin", id: null } : SYSTEM_ACTOR,
        requestId: c.get("requestId"),
      }),
      c.req.valid("json"),
    );
    return c.json({ data: { account: toAccountWire(account, c.env), api_key: key, inbox: toInboxWire(inbox) } }, 201);
  },
);

/** Authenticated: the caller's own account. */
export const accountRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });
const tags = ["Accounts"];

accountRoutes.openapi(
  jsonRoute({ method: "get", path: "/account", tags, summary: "Get your account and its limits", data: AccountWire }),
  async (c) => {
    requireScope(c, "read");
    return c.json({ data: toAccountWire(await getAccount(serviceContext(c)), c.env) }, 200);
  },
);

accountRoutes.openapi(
  jsonRoute({
    request: { body: jsonBody(AccountPatch) },
    method: "patch",
    path: "/account",
    tags,
    summary: "Update your account",
    data: AccountWire,
  }),
  async (c) => {
    requireFullAccess(c);
    return c.json({ data: toAccountWire(await patchAccount(serviceContext(c), c.req.valid("json")), c.env) }, 200);
  },
);

accountRoutes.openapi(
  jsonRoute({
    method: "delete",
    path: "/account",
    tags,
    summary: "Close your account: revokes every key and deactivates every inbox",
    data: AccountWire,
  }),
  async (c) => {
    requireFullAccess(c);
    return c.json({ data: toAccountWire(await closeAccount(serviceContext(c)), c.env) }, 200);
  },
);
