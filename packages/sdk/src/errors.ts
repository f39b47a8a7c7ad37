// Typed errors: every refusal of the API becomes a MailbotError (or a subclass chosen by status)
// carrying the API's `code`, `message`, `details` and `request_id`.

export interface ErrorInit {
  status: number | null;
  code: string;
  message: string;
  details?: unknown;
  requestId?: string | null;
  retryAfterSeconds?: number | null;
  headers?: Headers;
  cause?: unknown;
}

export class MailbotError extends Error {
  /** HTTP status, or null when no answer came (network error, timeout). */
  readonly status: number | null;
  /** The API's snake_case code (`address_taken`, `send_limit_exceeded`, …). */
  readonly code: string;
  readonly details: unknown;
  /** The request's `req_…` id (also in the server's logs and audit entries). */
  readonly requestId: string | null;
  /** `Retry-After` in seconds, when the server sent one. */
  readonly retryAfterSeconds: number | null;
  readonly headers: Headers | undefined;

  constructor(init: ErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.status = init.status;
    this.code = init.code;
    this.details = init.details;
    this.requestId = init.requestId ?? null;
    this.retryAfterSeconds = init.retryAfterSeconds ?? null;
    this.headers = init.headers;
  }
}

/** 400 / 422: a bad request, a validation failure or a blocked send (`send_blocked`). */
export class BadRequestError extends MailbotError {}
/** 401: missing, invalid or revoked key. */
export class AuthenticationError extends MailbotError {}
/** 403: scope, disabled inbox, suspended account. */
export class PermissionDeniedError extends MailbotError {}
/** 404: not found (also another account's resources). */
export class NotFoundError extends MailbotError {}
/** 408: a long-poll ran out of time (`wait_timeout`). */
export class WaitTimeoutError extends MailbotError {}
/** 409: conflict (`address_taken`, `idempotency_key_reused`, …). */
export class ConflictError extends MailbotError {}
/** 413: too large. */
export class PayloadTooLargeError extends MailbotError {}
/** 429: request rate (`rate_limited`, retried automatically) or send limit (`send_limit_exceeded`, never retried). */
export class RateLimitError extends MailbotError {}
/** 5xx. */
export class ServerError extends MailbotError {}
/** No answer: the connection failed or the request timed out. */
export class ConnectionError extends MailbotError {}

export function errorFor(init: ErrorInit): MailbotError {
  const s = init.status;
  if (s === null) return new ConnectionError(init);
  if (s === 401) return new AuthenticationError(init);
  if (s === 403) return new PermissionDeniedError(init);
  if (s === 404) return new NotFoundError(init);
  if (s === 408) return new WaitTimeoutError(init);
  if (s === 409) return new ConflictError(init);
  if (s === 413) return new PayloadTooLargeError(init);
  if (s === 429) return new RateLimitError(init);
  if (s >= 500) return new ServerError(init);
  if (s === 400 || s === 422) return new BadRequestError(init);
  return new MailbotError(init);
}
