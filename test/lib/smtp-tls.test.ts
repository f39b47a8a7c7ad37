/**
 * Issue 16, item 22: the SMTP client over TLS against real `smtp-server`s (test/global/smtp-server.ts)
 * whose certificates a test CA signed (trusted by workerd through NODE_EXTRA_CA_CERTS, set in
 * vitest.config.ts before workerd starts).
 */
import { describe, expect, inject, it } from "vitest";
import { type SmtpConfig, SmtpError, smtpSend } from "../../src/lib/smtp";
import { unique } from "../helpers/db";

interface Received {
  rcptTo: string[];
  raw: string;
  port: number;
  secure: boolean;
}

async function received(rcpt: string): Promise<Received[]> {
  const res = await fetch(`${inject("smtpControlUrl")}/messages?rcpt=${encodeURIComponent(rcpt)}`);
  return (await res.json()) as Received[];
}

const config = (port: number, security: SmtpConfig["security"]): SmtpConfig => ({
  host: "localhost",
  port,
  security,
  username: "mailbot",
  password: "test-smtp-password",
  heloName: "mailbot.test",
  timeoutMs: 5000,
});

const message = (to: string) =>
  new TextEncoder().encode(
    `From: a@mailbot.test\r\nTo: ${to}\r\nSubject: over TLS\r\nMessage-ID: <${crypto.randomUUID()}@mailbot.test>\r\n\r\nsecret body\r\n`,
  );

describe("SMTP over TLS", () => {
  it("STARTTLS (587-style): upgrades, authenticates and sends inside TLS", async () => {
    const to = unique("starttls");
    const port = inject("smtpStarttlsPort");
    const result = await smtpSend(config(port, "starttls"), "a@mailbot.test", [to], message(to));
    expect(result.accepted).toEqual([to]);
    const [got] = await received(to);
    expect(got).toMatchObject({ port, secure: true });
    expect(got?.raw).toContain("secret body");
  });

  it("implicit TLS (465-style): TLS from the first byte", async () => {
    const to = unique("implicit");
    const port = inject("smtpTlsPort");
    const result = await smtpSend(config(port, "tls"), "a@mailbot.test", [to], message(to));
    expect(result.accepted).toEqual([to]);
    expect(await received(to)).toMatchObject([{ port, secure: true }]);
  });

  it("refuses a server without STARTTLS when starttls is required, before sending anything", async () => {
    const to = unique("nostarttls");
    const err = await smtpSend(config(inject("smtpPort"), "starttls"), "a@mailbot.test", [to], message(to)).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SmtpError);
    expect(err).toMatchObject({ stage: "starttls" });
    expect(await received(to)).toEqual([]);
  });

  it("refuses a certificate no trusted CA signed", async () => {
    const to = unique("untrusted");
    const err = await smtpSend(
      config(inject("smtpUntrustedTlsPort"), "tls"),
      "a@mailbot.test",
      [to],
      message(to),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(await received(to)).toEqual([]);
  });
});
