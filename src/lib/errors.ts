/** One error family for every trigger; each transport maps it once (HTTP envelope, MCP result, queue ack/retry). */
export interface FieldIssue {
  path: string;
  message: string;
}

export class AppError extends Error {
  constructor(
    readonly status: 400 | 401 | 403 | 404 | 405 | 408 | 409 | 413 | 422 | 429 | 500 | 503,
    readonly code: string,
    message: string,
    readonly details?: unknown,
    readonly headers?: Record<string, string>,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export class BadRequest extends AppError {
  constructor(code: string, message: string, details?: unknown) {
    super(400, code, message, details);
  }
}

export class Unauthorized extends AppError {
  constructor(message = "Missing or invalid API key.", code = "unauthorized") {
    super(401, code, message, undefined, { "WWW-Authenticate": 'Bearer realm="mailbot"' });
  }
}

export class Forbidden extends AppError {
  constructor(code: string, message: string, details?: unknown) {
    super(403, code, message, details);
  }
}

export class NotFound extends AppError {
  constructor(resource = "Resource", code = "not_found") {
    super(404, code, `${resource} not found.`);
  }
}

export class Conflict extends AppError {
  constructor(code: string, message: string, details?: unknown) {
    super(409, code, message, details);
  }
}

export class PayloadTooLarge extends AppError {
  constructor(limitBytes: number) {
    super(413, "payload_too_large", `Request body exceeds ${limitBytes} bytes.`, { limit_bytes: limitBytes });
  }
}

export class ValidationFailed extends AppError {
  constructor(issues: FieldIssue[], message = "The request is invalid.") {
    super(422, "validation_error", message, issues);
  }
}

export class RateLimited extends AppError {
  constructor(code: string, message: string, retryAfterSeconds: number, headers: Record<string, string> = {}) {
    super(429, code, message, undefined, {
      ...headers,
      "Retry-After": String(Math.max(1, Math.ceil(retryAfterSeconds))),
    });
  }
}

/** A send refused by policy (sender authentication, content): 422 `send_blocked` with the reason and evidence. */
export class SendBlocked extends AppError {
  constructor(reason: string, message: string, details: Record<string, unknown> = {}) {
    super(422, "send_blocked", message, { reason, ...details });
  }
}

/** A deployment variable with a value the Worker cannot use: 500 `config_invalid`, naming the variable. */
export class ConfigInvalid extends AppError {
  constructor(variable: string, problem: string) {
    super(500, "config_invalid", `The deployment's ${variable} setting is invalid: ${problem}`, { variable });
  }
}
