import type { ResponseConfig } from "@asteasolutions/zod-to-openapi";
import { createRoute, type RouteConfig, z } from "@hono/zod-openapi";
import type { ZodType } from "zod";
import { ListMeta } from "../lib/pagination";

export const ErrorEnvelope = z
  .object({
    error: z.object({
      code: z.string().openapi({ example: "validation_error" }),
      message: z.string(),
      request_id: z.string().nullable().openapi({ example: "req_01jd0000000000000000000000" }),
      details: z.unknown().optional(),
    }),
  })
  .openapi("Error");

const header = (description: string) => ({ description, schema: { type: "string" as const } });
const REQUEST_ID = {
  "X-Request-Id": header("Unique id of this request (`req_…`); also in error bodies and audit entries"),
};
const BOOKMARK = {
  "X-Mailbot-Bookmark": header(
    "The D1 session bookmark after this request (present when it touched the database). Send it back as a request header of the same name to read at least what this request wrote, from any replica.",
  ),
};
const RATE_LIMIT = {
  "X-RateLimit-Limit": header("Requests allowed per minute for this key"),
  "X-RateLimit-Remaining": header("Requests left in the current window"),
  "X-RateLimit-Reset": header("Unix seconds when the window is entirely free again"),
};

const errorResponse = (description: string, headers: Record<string, ReturnType<typeof header>> = {}) => ({
  description,
  headers: { ...REQUEST_ID, ...headers },
  content: { "application/json": { schema: ErrorEnvelope } },
});

const COMMON_ERRORS = {
  400: errorResponse("Bad request (malformed JSON, bad cursor)"),
  401: errorResponse("Missing or invalid API key"),
  403: errorResponse("Forbidden: scope, suspended account, disabled inbox"),
  404: errorResponse("Not found (also another account's resource)"),
  409: errorResponse("Conflict, or an Idempotency-Key reused with another body"),
  413: errorResponse("Request body too large"),
  422: errorResponse("Validation failed; `details` lists each bad field"),
  429: errorResponse("Rate limited", { "Retry-After": header("Seconds to wait before retrying") }),
  500: errorResponse("Internal error"),
} as const;

type RequestSpec = NonNullable<RouteConfig["request"]>;

const IdempotencyHeader = z.object({
  // Documentation only: the idempotency middleware reads and checks the header itself.
  "Idempotency-Key": z.string().optional().openapi({
    description:
      "Same key and body within 24 h replays the first response (`Idempotent-Replayed: true`); another body is 409 `idempotency_key_reused`. Use a random value such as a UUID.",
  }),
});

interface JsonRouteSpec<R extends RequestSpec> {
  method: "get" | "post" | "patch" | "delete" | "put";
  path: string;
  tags: string[];
  summary: string;
  description?: string;
  request?: R;
  /** The `data` schema of a success response. */
  data: ZodType;
  list?: boolean;
  status?: 200 | 201 | 202;
  security?: "api_key" | "admin" | "none";
  /** Creating POSTs accept an Idempotency-Key. */
  idempotent?: boolean;
  /** Route-specific error responses (added, or replacing the common description). */
  errors?: Partial<Record<400 | 401 | 403 | 404 | 408 | 409 | 413 | 422 | 429 | 500 | 503, string>>;
}

/** A required JSON request body. */
export function jsonBody<S extends ZodType>(schema: S) {
  return { required: true, content: { "application/json": { schema } } } as const;
}

/** createRoute with the house conventions: `{ data }` / `{ data, meta }` bodies and the error envelope. */
export function jsonRoute<const R extends RequestSpec = Record<never, never>>(spec: JsonRouteSpec<R>) {
  const status = spec.status ?? 200;
  const successSchema = spec.list
    ? z.object({ data: z.array(spec.data as z.ZodType), meta: ListMeta })
    : z.object({ data: spec.data as z.ZodType });
  const security = spec.security === "none" ? [] : spec.security === "admin" ? [{ AdminToken: [] }] : [{ ApiKey: [] }];
  const responses: Record<string, ResponseConfig> = {
    [status]: {
      description: "Success",
      headers:
        spec.security === "none" || spec.security === "admin"
          ? { ...REQUEST_ID, ...BOOKMARK }
          : { ...REQUEST_ID, ...RATE_LIMIT, ...BOOKMARK },
      content: { "application/json": { schema: successSchema } },
    },
    ...COMMON_ERRORS,
    ...Object.fromEntries(Object.entries(spec.errors ?? {}).map(([code, text]) => [code, errorResponse(text)])),
  };
  return createRoute({
    method: spec.method,
    path: spec.path,
    tags: spec.tags,
    summary: spec.summary,
    description: spec.description,
    security,
    request: (spec.idempotent ? { ...spec.request, headers: IdempotencyHeader } : (spec.request ?? {})) as R,
    responses,
  });
}

/** A GET route whose success body is bytes (raw mail, attachments) rather than JSON. */
export function binaryRoute<const R extends RequestSpec>(spec: {
  path: string;
  tags: string[];
  summary: string;
  description?: string;
  request: R;
  contentType: string;
}) {
  return createRoute({
    method: "get",
    path: spec.path,
    tags: spec.tags,
    summary: spec.summary,
    description: spec.description,
    security: [{ ApiKey: [] }],
    request: spec.request,
    responses: {
      200: {
        description: "The bytes",
        headers: {
          ...REQUEST_ID,
          ...RATE_LIMIT,
          "Content-Disposition": header("attachment; filename=…"),
          "Content-Length": header("Size in bytes"),
        },
        content: { [spec.contentType]: { schema: { type: "string", format: "binary" } } },
      },
      ...COMMON_ERRORS,
    },
  });
}

interface StreamRouteSpec<R extends RequestSpec> {
  path: string;
  tags: string[];
  summary: string;
  description?: string;
  request: R;
  errors?: Partial<Record<400 | 410 | 429, string>>;
}

function streamErrors(errors: StreamRouteSpec<RequestSpec>["errors"]) {
  return {
    ...COMMON_ERRORS,
    ...Object.fromEntries(Object.entries(errors ?? {}).map(([code, text]) => [code, errorResponse(text)])),
  };
}

/** A GET route that answers with an endless Server-Sent Events stream. */
export function sseRoute<const R extends RequestSpec>(spec: StreamRouteSpec<R>) {
  return createRoute({
    method: "get",
    path: spec.path,
    tags: spec.tags,
    summary: spec.summary,
    description: spec.description,
    security: [{ ApiKey: [] }],
    request: spec.request,
    responses: {
      200: {
        description: "An endless `text/event-stream`: `id`, `event` and `data` (the Event JSON) per event",
        headers: { ...REQUEST_ID, ...RATE_LIMIT },
        content: { "text/event-stream": { schema: { type: "string" } } },
      },
      ...streamErrors(spec.errors),
    },
  });
}

/** A GET route that switches to a WebSocket (101). */
export function webSocketRoute<const R extends RequestSpec>(spec: StreamRouteSpec<R>) {
  return createRoute({
    method: "get",
    path: spec.path,
    tags: spec.tags,
    summary: spec.summary,
    description: spec.description,
    security: [{ ApiKey: [] }],
    request: spec.request,
    responses: {
      101: {
        description: "Switching Protocols: a WebSocket carrying one text message per event (the Event JSON)",
        headers: {
          ...REQUEST_ID,
          ...RATE_LIMIT,
          "Sec-WebSocket-Protocol": header("`mailbot`, when the client offered it"),
        },
      },
      ...streamErrors(spec.errors),
    },
  });
}
