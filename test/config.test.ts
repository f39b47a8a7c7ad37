import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { config, DEFAULT_MX_HOSTS, DEFAULT_RETRY_SCHEDULE_SECONDS, partialConfig } from "../src/config";
import type { Bindings } from "../src/env";
import main from "../src/index";
import { benchHooks } from "../src/lib/bench";
import { ConfigInvalid } from "../src/lib/errors";
import { DEFAULT_TIERS } from "../src/lib/tiers";

/** The bindings with only the vars given (plus MAIL_DOMAIN): every other var takes its default. */
function only(vars: Record<string, string | undefined>): Bindings {
  return { DB: env.DB, MAIL_DOMAIN: "mail.example.com", ...vars } as unknown as Bindings;
}

function failure(vars: Record<string, string | undefined>): ConfigInvalid {
  try {
    config(only(vars));
  } catch (err) {
    if (err instanceof ConfigInvalid) return err;
    throw err;
  }
  throw new Error(`expected ConfigInvalid for ${JSON.stringify(vars)}`);
}

describe("config", () => {
  it("gives every var its default", () => {
    const c = config(only({}));
    expect(c).toMatchObject({
      environment: "",
      isDevelopment: false,
      isProduction: false,
      mailDomain: "mail.example.com",
      registration: "closed",
      registrationsPerHour: 0,
      tiers: DEFAULT_TIERS,
      outboundTransport: "dev",
      smtp: { host: undefined, port: 587, security: "starttls", username: undefined, heloName: "mail.example.com" },
      trustedAuthservIds: ["mx.cloudflare.net"],
      webhookAllowLocal: false,
      webhookTimeoutMs: 10_000,
      webhookRetryScheduleSeconds: DEFAULT_RETRY_SCHEDULE_SECONDS,
      mcpAccountId: undefined,
      spfInclude: "_spf.mx.cloudflare.net",
      inboundMxHosts: DEFAULT_MX_HOSTS,
    });
    // Production's own defaults; empty vars (wrangler.toml's way of saying unset) mean the same.
    expect(
      config(
        only({ ENVIRONMENT: "production", REGISTRATIONS_PER_HOUR: "", OUTBOUND_TRANSPORT: "", MCP_ACCOUNT_ID: " " }),
      ),
    ).toMatchObject({
      isProduction: true,
      registrationsPerHour: 10,
      outboundTransport: "cloudflare",
      mcpAccountId: undefined,
    });
    expect(config(only({ SMTP_SECURITY: "tls" })).smtp.port).toBe(465);
  });

  it("is parsed once per env object", () => {
    const e = only({ ENVIRONMENT: "development" });
    expect(config(e)).toBe(config(e));
    expect(config(e)).not.toBe(config(only({ ENVIRONMENT: "development" })));
  });

  it("is development for exactly 'development' only", () => {
    for (const environment of ["production", "staging", "Development", "development ", ""]) {
      expect(config(only({ ENVIRONMENT: environment })).isDevelopment, environment).toBe(false);
    }
    expect(config(only({ ENVIRONMENT: "development" })).isDevelopment).toBe(true);
  });

  it("reads lists, enums, numbers and flags", () => {
    const c = config(
      only({
        ENVIRONMENT: "development",
        REGISTRATION: "open",
        REGISTRATIONS_PER_HOUR: " 25 ",
        TIER_LIMITS: '{"sandbox":{"burst":20}}',
        OUTBOUND_TRANSPORT: " smtp\t",
        SMTP_HOST: "relay.example",
        SMTP_PORT: "2525",
        SMTP_SECURITY: "none",
        SMTP_HELO_NAME: "helo.example",
        TRUSTED_AUTHSERV_IDS: " MX.Cloudflare.net, mx.example ,,",
        WEBHOOK_ALLOW_LOCAL: "true",
        WEBHOOK_TIMEOUT_MS: "1500",
        WEBHOOK_RETRY_SCHEDULE: "0, 5, 5",
        MCP_ACCOUNT_ID: " acct_1 ",
        SPF_INCLUDE: " spf.relay.example ",
        INBOUND_MX_HOSTS: "MX1.example, mx2.example",
      }),
    );
    expect(c).toMatchObject({
      registration: "open",
      registrationsPerHour: 25,
      outboundTransport: "smtp",
      smtp: { host: "relay.example", port: 2525, security: "none", heloName: "helo.example" },
      trustedAuthservIds: ["mx.cloudflare.net", "mx.example"],
      webhookAllowLocal: true,
      webhookTimeoutMs: 1500,
      webhookRetryScheduleSeconds: [0, 5, 5],
      mcpAccountId: "acct_1",
      spfInclude: "spf.relay.example",
      inboundMxHosts: ["mx1.example", "mx2.example"],
    });
    expect(c.tiers.sandbox).toMatchObject({ requests_per_minute: 60, burst: 20 });
    // Set but empty: nobody's Authentication-Results are believed (unset: the default).
    expect(config(only({ TRUSTED_AUTHSERV_IDS: "" })).trustedAuthservIds).toEqual([]);
    // Never in production, whatever the flag says.
    expect(config(only({ ENVIRONMENT: "production", WEBHOOK_ALLOW_LOCAL: "true" })).webhookAllowLocal).toBe(false);
  });

  it("reads TOML numbers and booleans as the text they stand for", () => {
    const c = config(
      only({
        SMTP_PORT: 465,
        REGISTRATIONS_PER_HOUR: 10,
        WEBHOOK_TIMEOUT_MS: 5000,
        WEBHOOK_ALLOW_LOCAL: false,
      } as unknown as Record<string, string>),
    );
    expect(c).toMatchObject({ smtp: { port: 465 }, registrationsPerHour: 10, webhookTimeoutMs: 5000 });
    expect(c.webhookAllowLocal).toBe(false);
  });

  it("fails loudly on a value it cannot use, naming the variable", () => {
    for (const [variable, value] of [
      ["REGISTRATIONS_PER_HOUR", "ten"],
      ["REGISTRATIONS_PER_HOUR", "-1"],
      ["OUTBOUND_TRANSPORT", "sendgrid"],
      ["WEBHOOK_TIMEOUT_MS", "soon"],
      ["WEBHOOK_TIMEOUT_MS", "0"],
      ["REGISTRATION", "opened"],
      ["SMTP_PORT", "70000"],
      ["SMTP_SECURITY", "ssl"],
      ["WEBHOOK_ALLOW_LOCAL", "yes"],
      ["TIER_LIMITS", "{not json"],
    ] as const) {
      const err = failure({ [variable]: value });
      expect(err, `${variable}=${value}`).toMatchObject({
        kind: "internal",
        code: "config_invalid",
        details: { variable },
      });
      expect(err.message).toContain(variable);
    }
    expect(() => config({ DB: env.DB } as unknown as Bindings)).toThrow(/MAIL_DOMAIN/);
    // Helpers that take a handful of vars need no MAIL_DOMAIN, and check the values they read.
    expect(partialConfig({ ENVIRONMENT: "development" }).isDevelopment).toBe(true);
    expect(() => partialConfig({ OUTBOUND_TRANSPORT: "sendgrid" })).toThrow(ConfigInvalid);
  });

  it("keeps the bench switches off outside development", () => {
    const vars = {
      BENCH_DNS_DELAY_MS: "20",
      BENCH_SEND_POLICY: "off",
      BENCH_SERVER_TIMING: "on",
      BENCH_DO_DELAY_MS: "50",
    };
    expect(benchHooks(only({ ...vars, ENVIRONMENT: "production" }))).toEqual({
      dnsDelayMs: 0,
      skipSendPolicy: false,
      serverTiming: false,
      doDelayMs: 0,
    });
    expect(benchHooks(only({ ...vars, ENVIRONMENT: "staging" })).skipSendPolicy).toBe(false);
    expect(benchHooks(only({ ...vars, ENVIRONMENT: "development" }))).toEqual({
      dnsDelayMs: 20,
      skipSendPolicy: true,
      serverTiming: true,
      doDelayMs: 50,
    });
    expect(benchHooks(only({ ENVIRONMENT: "development" }))).toEqual({
      dnsDelayMs: 0,
      skipSendPolicy: false,
      serverTiming: false,
      doDelayMs: 0,
    });
  });

  it("turns a broken var into a 500 config_invalid envelope on the first request", async () => {
    const ctx = createExecutionContext();
    const res = await main.fetch(
      new Request("http://localhost/health"),
      { ...env, REGISTRATIONS_PER_HOUR: "lots" } as unknown as Bindings,
      ctx,
    );
    await waitOnExecutionContext(ctx);
    expect(res.status).toBe(500);
    const body = (await res.json()) as { error: { code: string; message: string; request_id: string | null } };
    expect(body.error).toMatchObject({
      code: "config_invalid",
      message: expect.stringContaining("REGISTRATIONS_PER_HOUR"),
      request_id: expect.stringMatching(/^req_/),
      details: { variable: "REGISTRATIONS_PER_HOUR" },
    });
    // The same env, fixed, serves the request.
    const ok = await main.fetch(new Request("http://localhost/health"), env as unknown as Bindings, ctx);
    expect(ok.status).toBe(200);
  });
});
