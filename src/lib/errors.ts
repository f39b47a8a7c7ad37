/**
 * One error family for every trigger. An error says what went wrong (its kind), a stable code and
 * details; it never says how a transport shows it. Each transport maps kinds once: HTTP in
 * http/errors.ts (status and headers), MCP in mcp/errors.ts (tool result or protocol error), the
 * queue and email triggers by class (retry, reject).
 */
export interface FieldIssue {
  path: string;
  message: string;
}

/** What kind of failure an error is; the transports map these, never the codes one by one. */
export type ErrorKind =
  | "bad_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "method_not_allowed"
  | "timeout"
  | "conflict"
  | "gone"
  | "too_large"
  | "invalid"
  | "rate_limited"
  | "internal"
  | "unavailable";

export abstract class AppError extends Error {
  abstract readonly kind: ErrorKind;
  /** Seconds after which a retry may succeed (rate limits, temporary outages). */
  readonly retryAfterSeconds?: number;

  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
    retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = new.target.name;
    if (retryAfterSeconds !== undefined) this.retryAfterSeconds = Math.max(1, Math.ceil(retryAfterSeconds));
  }
}

export class BadRequest extends AppError {
  readonly kind = "bad_request";
}

export class Unauthorized extends AppError {
  readonly kind = "unauthorized";
  constructor(message = "Missing or invalid API key.", code = "unauthorized") {
    super(code, message);
  }
}

export class Forbidden extends AppError {
  readonly kind = "forbidden";
}

export class NotFound extends AppError {
  readonly kind = "not_found";
  constructor(resource = "Resource", code = "not_found") {
    super(code, `${resource} not found.`);
  }
}

/** A recipient mailbot will not accept mail for (unknown, deactivated, disabled, suspended). */
export class RecipientRejected extends AppError {
  readonly kind = "not_found";
  constructor(message: string) {
    super("unknown_recipient", message);
  }
}

export class MethodNotAllowed extends AppError {
  readonly kind = "method_not_allowed";
  constructor(
    readonly allowed: string[],
    message = `Allowed: ${allowed.join(", ")}.`,
  ) {
    super("method_not_allowed", message);
  }
}

/** A long-poll that ended with nothing to return. */
export class WaitTimeout extends AppError {
  readonly kind = "timeout";
  constructor(message: string) {
    super("wait_timeout", message);
  }
}

export class Conflict extends AppError {
  readonly kind = "conflict";
}

/** A request body over its endpoint's limit. */
/** What the caller points at existed but is no longer served (a stream cursor too far behind). */
export class Gone extends AppError {
  readonly kind = "gone";
}

export class PayloadTooLarge extends AppError {
  readonly kind = "too_large";
  /** Without a limit (a body the framework refused), the refusal's own message and no details. */
  constructor(limitBytes: number | null, message?: string) {
    super(
      "payload_too_large",
      message ?? `Request body exceeds ${limitBytes} bytes.`,
      limitBytes === null ? undefined : { limit_bytes: limitBytes },
    );
  }
}

/** A message (inbound or outbound) over the size mail may have. */
export class MessageTooLarge extends AppError {
  readonly kind = "too_large";
  constructor(message: string, details: { limit_bytes: number; size?: number }) {
    super("message_too_large", message, details);
  }
}

export class ValidationFailed extends AppError {
  readonly kind = "invalid";
  constructor(issues: FieldIssue[], message = "The request is invalid.") {
    super("validation_error", message, issues);
  }
}

/** Well-formed input that a rule refuses (too many recipients, every recipient suppressed, …). */
export class Unprocessable extends AppError {
  readonly kind = "invalid";
}

/** A send refused by policy (sender authentication, content): `send_blocked` with the reason and evidence. */
export class SendBlocked extends AppError {
  readonly kind = "invalid";
  constructor(reason: string, message: string, details: Record<string, unknown> = {}) {
    super("send_blocked", message, { reason, ...details });
  }
}

/** The rate-limit figures a transport may show with a 429 (HTTP: `X-RateLimit-*`). */
export interface RateLimitFigures {
  limit: number;
  remaining: number;
  resetAtMs: number;
}

export class RateLimited extends AppError {
  readonly kind = "rate_limited";
  constructor(
    code: string,
    message: string,
    retryAfterSeconds: number,
    readonly figures?: RateLimitFigures,
    details?: unknown,
  ) {
    super(code, message, details, retryAfterSeconds);
  }
}

/** Something this deployment cannot do right now (busy, a temporary DNS failure, not configured). */
export class ServiceUnavailable extends AppError {
  readonly kind = "unavailable";
  constructor(code: string, message: string, details?: unknown, retryAfterSeconds?: number) {
    super(code, message, details, retryAfterSeconds);
  }
}

/** Our fault (a missing secret, a lost object): logged, shown without internals. */
export class InternalError extends AppError {
  readonly kind = "internal";
}

/** A deployment variable with a value the Worker cannot use: `config_invalid`, naming the variable. */
export class ConfigInvalid extends AppError {
  readonly kind = "internal";
  constructor(variable: string, problem: string) {
    super("config_invalid", `The deployment's ${variable} setting is invalid: ${problem}`, { variable });
  }
}

/**
 * Inbound mail refused by the recipient inbox's policy (screening verdict in `reject` mode, or a
 * blocked sender): Email Routing rejects it with this message (a 5xx), the relay answers 422.
 */
export class ContentRejected extends AppError {
  readonly kind = "invalid";
  constructor(message: string, details: Record<string, unknown> = {}) {
    super("content_rejected", message, details);
  }
}

/** An automatic reply that would feed a mail loop (rule 7): 422 `loop_suspected` with the numbers. */
export class LoopSuspected extends AppError {
  readonly kind = "invalid";
  constructor(message: string, details: Record<string, unknown>) {
    super("loop_suspected", message, details);
  }
}
