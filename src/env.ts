import type { InboxCounter } from "./durable-objects/inbox-counter";
import type { RateLimiter } from "./durable-objects/rate-limiter";

/** Every binding, var and secret the Worker reads, in one place. */
export interface Bindings {
  DB: D1Database;
  MAIL_BUCKET: R2Bucket;
  OUTBOUND_QUEUE: Queue<unknown>;
  WEBHOOK_QUEUE: Queue<unknown>;
  INBOX_COUNTER: DurableObjectNamespace<InboxCounter>;
  RATE_LIMITER: DurableObjectNamespace<RateLimiter>;
  EMAIL?: SendEmail;

  ENVIRONMENT: string;
  MAIL_DOMAIN: string;
  REGISTRATION: string;
  TIER_LIMITS?: string;
  REGISTRATIONS_PER_HOUR?: string;
  /** `cloudflare` (production default), `smtp` or `dev` (local default). */
  OUTBOUND_TRANSPORT?: string;
  SMTP_HOST?: string;
  SMTP_PORT?: string;
  /** `starttls` (default, port 587), `tls` (465) or `none` (refused in production). */
  SMTP_SECURITY?: string;
  SMTP_USERNAME?: string;
  SMTP_HELO_NAME?: string;
  /** Comma-separated authserv-ids whose Authentication-Results headers are believed. */
  TRUSTED_AUTHSERV_IDS?: string;

  /** "true" lets webhooks target http://localhost and http://127.0.0.1 (ignored in production). */
  WEBHOOK_ALLOW_LOCAL?: string;
  /** Per-attempt webhook timeout (default 10000). */
  WEBHOOK_TIMEOUT_MS?: string;
  /** Comma-separated delays in seconds before each webhook attempt (default 0,30,120,600,3600,21600). */
  WEBHOOK_RETRY_SCHEDULE?: string;
  /** Pins /mcp to one account (single-tenant deployments): other accounts' keys get 403 `mcp_account_not_allowed`. */
  MCP_ACCOUNT_ID?: string;

  ADMIN_TOKEN?: string;
  INBOUND_SECRET?: string;
  SMTP_PASSWORD?: string;
  DKIM_ENCRYPTION_KEY?: string;
  /** Seals webhook signing secrets at rest (AES-GCM); unset: stored as issued. */
  WEBHOOK_ENCRYPTION_KEY?: string;

  /** PKCS#8 RSA private key (PEM or base64) MAIL_DOMAIN's mail is DKIM-signed with (selector `default`). */
  DKIM_PRIVATE_KEY?: string;
  /** The domain sending domains must `include:` in SPF (default `_spf.mx.cloudflare.net`). */
  SPF_INCLUDE?: string;
  /** Comma-separated MX hosts custom domains point at for inbound mail (default Cloudflare Email Routing's). */
  INBOUND_MX_HOSTS?: string;
  /** Bench only (ENVIRONMENT=development): delay every sender-authentication DNS lookup (a cold cache). */
  BENCH_DNS_DELAY_MS?: string;
  /** Bench only (ENVIRONMENT=development): "off" skips the pre-send policy, to measure what it adds. */
  BENCH_SEND_POLICY?: string;
  /** Bench only (ENVIRONMENT=development): "on" adds the reputation check's Server-Timing header. */
  BENCH_SERVER_TIMING?: string;
}

declare global {
  namespace Cloudflare {
    interface Env extends Bindings {}
  }
}
