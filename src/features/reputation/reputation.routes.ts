import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../http/app-env";
import { requireScope } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { InboxIdParam } from "../inboxes/inboxes.schemas";
import { ReputationWire } from "./reputation.schemas";
import { getAccountReputation, getReputationWithHeaders } from "./reputation.service";

/** `GET /v1/inboxes/:inbox_id/reputation`. */
export const reputationRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

reputationRoutes.openapi(
  jsonRoute({
    request: { params: InboxIdParam },
    method: "get",
    path: "/inboxes/{inbox_id}/reputation",
    tags: ["Inboxes"],
    summary: "An inbox's sending reputation over the last 7 days",
    description:
      "Above 10 % hard bounces or 0.3 % complaints, with at least 20 sends in the window, the inbox is disabled automatically. At 2/3 of a threshold `status` is `warning` and every response about the inbox carries `X-Mailbot-Warning`.",
    data: ReputationWire,
  }),
  async (c) => {
    requireScope(c, "read");
    // The warning middleware skips this route: one counter call gives both the body and the headers.
    const { data, headers } = await getReputationWithHeaders(serviceContext(c), c.req.valid("param").inbox_id);
    return c.json({ data }, 200, headers ?? {});
  },
);

reputationRoutes.openapi(
  jsonRoute({
    method: "get",
    path: "/account/reputation",
    tags: ["Accounts"],
    summary: "The account's sending reputation over all its inboxes (last 7 days)",
    description:
      "The same rates as an inbox's, over every inbox of the account (distinct recipients in the window). Above 10 % hard bounces or 0.3 % complaints, with at least 20 sends in the window, `status` is `disabled` and every send of the account is refused with 403 `account_reputation`, whichever inbox it comes from.",
    data: ReputationWire,
  }),
  async (c) => {
    requireScope(c, "read");
    return c.json({ data: await getAccountReputation(serviceContext(c)) }, 200);
  },
);
