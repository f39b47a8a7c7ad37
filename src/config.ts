import { z } from "zod";
import type { Bindings } from "./env";
import { ConfigInvalid } from "./lib/errors";
import { log } from "./lib/log";
import { type TierLimits, tierTable } from "./lib/tiers";

/**
 * The Worker's vars (wrangler.toml [vars], .dev.vars), parsed once per env object into a typed
 * config: defaults, enums and lists live here and nowhere else. A value the Worker cannot use
 * throws `ConfigInvalid` (500 `config_invalid`, naming the variable) at the first request that
 * reads the config, which is every request (the d1Stats middleware asks whether this is
 * development), instead of misbehaving quietly later. Secrets stay on `env`, read where used.
 */

/** Who Authentication-Results are believed from, unless TRUSTED_AUTHSERV_IDS says otherwise. */
export const DEFAULT_TRUSTED_AUTHSERV_IDS = ["mx.cloudflare.net"];
/** Cloudflare Email Service's SPF include, unless SPF_INCLUDE says otherwise. */
export const DEFAULT_SPF_INCLUDE = "_spf.mx.cloudflare.net";
/** Cloudflare Email Routing's MX hosts, unless INBOUND_MX_HOSTS says otherwise. */
export const DEFAULT_MX_HOSTS = ["route1.mx.cloudflare.net", "route2.mx.cloudflare.net", "route3.mx.cloudflare.net"];
/** Delays before webhook attempts 1..6 (API.md: at 0, 30 s, 2 min, 10 min, 1 h, 6 h). */
export const DEFAULT_RETRY_SCHEDULE_SECONDS = [0, 30, 120, 600, 3600, 21_600];
/** Per-attempt webhook timeout, unless WEBHOOK_TIMEOUT_MS says otherwise. */
export const DEFAULT_TIMEOUT_MS = 10_000;
/**
 * A first attempt made inline (in waitUntil, cut ~30 s after the response) has the contract's
 * 10 s timeout too (API.md: "10 s timeout"); WEBHOOK_INLINE_TIMEOUT_MS may shorten it (never longer
 * than the queued timeout). The inline attempts together stop at a deadline well inside the cut.
 */
export const DEFAULT_INLINE_TIMEOUT_MS = 10_000;

/** An empty (or blank) var means the same as an unset one: the default. */
const blankToUndefined = (v: unknown) => (typeof v === "string" && v.trim() === "" ? undefined : v);
const optionalText = z.preprocess(blankToUndefined, z.string().trim().optional());
const wholeNumber = (min: number, max = Number.MAX_SAFE_INTEGER) =>
  z.preprocess(
    blankToUndefined,
    z
      .string()
      .trim()
      .regex(/^\d+$/, "expected a whole number")
      .transform(Number)
      .pipe(z.number().int().min(min).max(max))
      .optional(),
  );
const flag = z.preprocess(
  blankToUndefined,
  z
    .string()
    .trim()
    .pipe(z.enum(["true", "false"]))
    .optional(),
);
/** Comma-separated, trimmed, lower-cased, empties dropped. */
const list = z.string().transform((v) =>
  v
    .split(",")
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean),
);

const Vars = z.object({
  /** Free text: only exactly "development" is development, only exactly "production" is production. */
  ENVIRONMENT: z.string().optional(),
  MAIL_DOMAIN: optionalText,
  /** Exact (untrimmed): "open " is a mistake, not an open door. */
  REGISTRATION: z.preprocess(blankToUndefined, z.enum(["open", "closed"]).optional()),
  REGISTRATIONS_PER_HOUR: wholeNumber(0),
  TIER_LIMITS: z
    .string()
    .optional()
    .transform((raw, ctx) => {
      try {
        return tierTable(raw);
      } catch (err) {
        ctx.addIssue({ code: "custom", message: (err as Error).message.replace(/^TIER_LIMITS is not valid: /, "") });
        return z.NEVER;
      }
    }),
  OUTBOUND_TRANSPORT: z.preprocess(
    blankToUndefined,
    z
      .string()
      .trim()
      .pipe(z.enum(["cloudflare", "smtp", "dev"]))
      .optional(),
  ),
  SMTP_HOST: optionalText,
  SMTP_PORT: wholeNumber(1, 65_535),
  SMTP_SECURITY: z.preprocess(
    blankToUndefined,
    z
      .string()
      .trim()
      .pipe(z.enum(["starttls", "tls", "none"]))
      .optional(),
  ),
  SMTP_USERNAME: optionalText,
  SMTP_HELO_NAME: optionalText,
  /** Unset: the default; set but empty: nobody's Authentication-Results are believed. */
  TRUSTED_AUTHSERV_IDS: list.optional(),
  /** Domains whose feedback reports count (DKIM-verified per a trusted Authentication-Results). */
  FEEDBACK_LOOP_SOURCES: list.optional(),
  /** The relay path's own receivers; unset or empty: no Authentication-Results of relayed mail are believed. */
  INBOUND_RELAY_AUTHSERV_IDS: list.optional(),
  WEBHOOK_ALLOW_LOCAL: flag,
  WEBHOOK_TIMEOUT_MS: wholeNumber(1),
  WEBHOOK_INLINE_TIMEOUT_MS: wholeNumber(1),
  /** Lenient on purpose: a schedule with a non-number or a negative delay falls back to the default. */
  WEBHOOK_RETRY_SCHEDULE: z
    .string()
    .optional()
    .transform((raw) => {
      const parsed = (raw ?? "")
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean)
        .map(Number);
      return parsed.length > 0 && parsed.every((n) => Number.isFinite(n) && n >= 0)
        ? parsed
        : DEFAULT_RETRY_SCHEDULE_SECONDS;
    }),
  MCP_ACCOUNT_ID: optionalText,
  SPF_INCLUDE: optionalText,
  INBOUND_MX_HOSTS: list.optional(),
  /** Bench switches: raw here, honoured only through lib/bench (development only). */
  BENCH_DNS_DELAY_MS: z
    .string()
    .optional()
    .transform((raw) => Number(raw ?? 0) || 0),
  BENCH_SEND_POLICY: z.string().optional(),
  BENCH_DO_DELAY_MS: z
    .string()
    .optional()
    .transform((raw) => Number(raw ?? 0) || 0),
  BENCH_SERVER_TIMING: z.string().optional(),
});

export interface SmtpConfig {
  host: string | undefined;
  port: number;
  security: "starttls" | "tls" | "none";
  username: string | undefined;
  heloName: string;
}

/** The typed configuration; `mailDomain` is required (see `config`). */
export interface Config {
  /** ENVIRONMENT as written ("" when unset). */
  environment: string;
  /** ENVIRONMENT is exactly "development" (`npm run dev`, the tests, the benches): never a typo or "staging". */
  isDevelopment: boolean;
  /** ENVIRONMENT is exactly "production". */
  isProduction: boolean;
  mailDomain: string;
  registration: "open" | "closed";
  /** Open registrations per client address per hour; 0 is no limit (default 10 in production, 0 elsewhere). */
  registrationsPerHour: number;
  /** The tier table: defaults merged with TIER_LIMITS. */
  tiers: Record<string, TierLimits>;
  /** OUTBOUND_TRANSPORT, else `cloudflare` in production and `dev` elsewhere. */
  outboundTransport: "cloudflare" | "smtp" | "dev";
  smtp: SmtpConfig;
  /** Email Routing's path: whose topmost Authentication-Results are believed. */
  trustedAuthservIds: string[];
  /** FEEDBACK_LOOP_SOURCES: the domains an ARF complaint must be DKIM-signed by to count (default none). */
  feedbackLoopSources: string[];
  /** The relay path's (`/webhooks/inbound/raw`): only the relay's own receiver, none by default. */
  relayAuthservIds: string[];
  /** WEBHOOK_ALLOW_LOCAL = "true", never in production. */
  webhookAllowLocal: boolean;
  webhookTimeoutMs: number;
  webhookInlineTimeoutMs: number;
  webhookRetryScheduleSeconds: number[];
  /** The one account /mcp serves, when pinned. */
  mcpAccountId: string | undefined;
  spfInclude: string;
  inboundMxHosts: string[];
  /** Raw bench switches: read them through lib/bench's `benchHooks`, which ignores them outside development. */
  bench: {
    dnsDelayMs: number;
    sendPolicy: string | undefined;
    serverTiming: string | undefined;
    doDelayMs: number;
  };
}

/** The config of an env that may carry only some variables (helpers and unit tests); nothing is required. */
export type PartialConfig = Omit<Config, "mailDomain"> & { mailDomain: string | undefined };

const cache = new WeakMap<object, PartialConfig>();

/**
 * Vars as strings: wrangler.toml may write `SMTP_PORT = 465` or `WEBHOOK_ALLOW_LOCAL = false`
 * (a TOML number or boolean), which reach the Worker as such; they mean what their text says.
 */
function asStrings(env: Partial<Bindings>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(Vars.shape)) {
    const value = (env as Record<string, unknown>)[key];
    out[key] = typeof value === "number" || typeof value === "boolean" ? String(value) : value;
  }
  return out;
}

/** Every var parsed, with its default; throws `ConfigInvalid` naming the first unusable variable. */
export function partialConfig(env: Partial<Bindings>): PartialConfig {
  const hit = cache.get(env);
  if (hit) return hit;
  const parsed = Vars.safeParse(asStrings(env));
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const variable = String(issue?.path[0] ?? "configuration");
    const error = new ConfigInvalid(variable, issue?.message ?? "invalid value");
    log.error("configuration invalid", { variable, error: error.message });
    throw error;
  }
  const v = parsed.data;
  const environment = v.ENVIRONMENT ?? "";
  const isProduction = environment === "production";
  const security = v.SMTP_SECURITY ?? "starttls";
  const built: PartialConfig = {
    environment,
    isDevelopment: environment === "development",
    isProduction,
    mailDomain: v.MAIL_DOMAIN,
    registration: v.REGISTRATION ?? "closed",
    registrationsPerHour: v.REGISTRATIONS_PER_HOUR ?? (isProduction ? 10 : 0),
    tiers: v.TIER_LIMITS,
    outboundTransport: v.OUTBOUND_TRANSPORT ?? (isProduction ? "cloudflare" : "dev"),
    smtp: {
      host: v.SMTP_HOST,
      port: v.SMTP_PORT ?? (security === "tls" ? 465 : 587),
      security,
      username: v.SMTP_USERNAME,
      heloName: v.SMTP_HELO_NAME ?? v.MAIL_DOMAIN ?? "",
    },
    trustedAuthservIds: v.TRUSTED_AUTHSERV_IDS ?? DEFAULT_TRUSTED_AUTHSERV_IDS,
    feedbackLoopSources: v.FEEDBACK_LOOP_SOURCES ?? [],
    relayAuthservIds: v.INBOUND_RELAY_AUTHSERV_IDS ?? [],
    webhookAllowLocal: !isProduction && v.WEBHOOK_ALLOW_LOCAL === "true",
    webhookTimeoutMs: v.WEBHOOK_TIMEOUT_MS ?? DEFAULT_TIMEOUT_MS,
    webhookInlineTimeoutMs: Math.min(
      v.WEBHOOK_INLINE_TIMEOUT_MS ?? DEFAULT_INLINE_TIMEOUT_MS,
      v.WEBHOOK_TIMEOUT_MS ?? DEFAULT_TIMEOUT_MS,
    ),
    webhookRetryScheduleSeconds: v.WEBHOOK_RETRY_SCHEDULE,
    mcpAccountId: v.MCP_ACCOUNT_ID,
    spfInclude: v.SPF_INCLUDE ?? DEFAULT_SPF_INCLUDE,
    inboundMxHosts: v.INBOUND_MX_HOSTS?.length ? v.INBOUND_MX_HOSTS : DEFAULT_MX_HOSTS,
    bench: {
      dnsDelayMs: v.BENCH_DNS_DELAY_MS,
      sendPolicy: v.BENCH_SEND_POLICY,
      serverTiming: v.BENCH_SERVER_TIMING,
      doDelayMs: v.BENCH_DO_DELAY_MS,
    },
  };
  cache.set(env, built);
  return built;
}

/** The Worker's config, parsed once per env object (so once per isolate); MAIL_DOMAIN is required. */
export function config(env: Bindings): Config {
  const c = partialConfig(env);
  if (c.mailDomain === undefined) {
    const error = new ConfigInvalid("MAIL_DOMAIN", "it is required (the shared domain inboxes live on).");
    log.error("configuration invalid", { variable: "MAIL_DOMAIN", error: error.message });
    throw error;
  }
  return c as Config;
}

/** AUDIT_HMAC_KEY shorter than this is a mistake (a placeholder), not a key. */
export const MIN_AUDIT_KEY_LENGTH = 32;

/**
 * The key the audit chain is keyed with (HMAC-SHA256): the AUDIT_HMAC_KEY secret, which never
 * lives in D1, so whoever can write to the database still cannot re-link an edited entry. Only
 * when ENVIRONMENT is exactly "development" does an unset key fall back to one derived from the
 * deployment's MAIL_DOMAIN (no secret, but distinct per deployment and stable across restarts).
 * Anywhere else an unset or short key is `ConfigInvalid`: an audited write fails loudly (500
 * `config_invalid`, like a missing MAIL_DOMAIN) instead of writing entries nobody can verify.
 */
export function auditHmacKey(env: Bindings): string {
  const key = env.AUDIT_HMAC_KEY?.trim();
  if (key) {
    if (key.length < MIN_AUDIT_KEY_LENGTH) {
      const error = new ConfigInvalid("AUDIT_HMAC_KEY", `it must be at least ${MIN_AUDIT_KEY_LENGTH} characters.`);
      log.error("configuration invalid", { variable: "AUDIT_HMAC_KEY", error: error.message });
      throw error;
    }
    return key;
  }
  const c = partialConfig(env);
  if (c.isDevelopment) return `mailbot-development-audit-key:${c.mailDomain ?? ""}`;
  const error = new ConfigInvalid(
    "AUDIT_HMAC_KEY",
    "it is required outside development (set it with `wrangler secret put AUDIT_HMAC_KEY`).",
  );
  log.error("configuration invalid", { variable: "AUDIT_HMAC_KEY", error: error.message });
  throw error;
}
