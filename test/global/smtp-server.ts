/**
 * A real SMTP server (npm `smtp-server`) for the test run, on 127.0.0.1 in plain text, without
 * STARTTLS. The Worker under test submits to it with OUTBOUND_TRANSPORT=smtp; tests read what it
 * received through a small HTTP control endpoint. Three more serve TLS (test/global/tls-ca.ts
 * makes the certificates; workerd trusts the test CA through NODE_EXTRA_CA_CERTS): STARTTLS on a
 * 587-style port, implicit TLS on a 465-style port, and implicit TLS with a self-signed
 * certificate nobody trusts. Each received message records whether its session was encrypted.
 *
 * Recipients script failures by their local part:
 *   perm-…      550 5.1.1 at RCPT    temp-…      451 at RCPT
 *   policy-…    550 5.7.1 at RCPT (the relay's own refusal: relaying denied)
 *   dataperm-…  554 after the data   datatemp-…  451 after the data
 *   ratelimit-… 451 4.7.1 at RCPT the first time that address is tried, accepted afterwards
 *   relaydeny-… 550 at RCPT with no enhanced status ("Relaying denied": the relay's refusal)
 *   nouser-…    550 at RCPT with no enhanced status ("User unknown": the mailbox's refusal)
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { dkimVerify } from "mailauth/lib/dkim/verify";
import { SMTPServer, type SMTPServerOptions } from "smtp-server";
import type { TestProject } from "vitest/node";
import { readTestTls, TLS_DIR_ENV } from "./tls-ca.ts";

export const SMTP_USER = "mailbot";
export const SMTP_PASSWORD = "test-smtp-password";

interface Received {
  mailFrom: string;
  rcptTo: string[];
  user: string | null;
  raw: string;
  receivedAt: number;
  /** The port of the server that took it, and whether the session was TLS by then. */
  port: number;
  secure: boolean;
}

export default async function setup(project: TestProject) {
  const received: Received[] = [];
  // ratelimit-… addresses refused once already.
  const limited = new Set<string>();

  const tlsDir = process.env[TLS_DIR_ENV];
  if (!tlsDir) throw new Error(`${TLS_DIR_ENV} is not set: vitest.config.ts makes the test CA`);
  const tls = readTestTls(tlsDir);

  const options = (extra: Partial<SMTPServerOptions>, port: () => number): SMTPServerOptions => ({
    name: "smtp.test",
    secure: false,
    disabledCommands: ["STARTTLS"],
    ...extra,
    allowInsecureAuth: true,
    authMethods: ["PLAIN", "LOGIN"],
    size: 10 * 1024 * 1024,
    logger: false,
    onAuth(auth, _session, callback) {
      if (auth.username === SMTP_USER && auth.password === SMTP_PASSWORD) return callback(null, { user: SMTP_USER });
      return callback(new Error("535 5.7.8 Authentication credentials invalid"));
    },
    onRcptTo(address, _session, callback) {
      const local = address.address.split("@")[0] ?? "";
      if (local.startsWith("perm-")) {
        return callback(Object.assign(new Error("5.1.1 No such user here"), { responseCode: 550 }));
      }
      if (local.startsWith("policy-")) {
        return callback(Object.assign(new Error("5.7.1 Relay access denied"), { responseCode: 550 }));
      }
      if (local.startsWith("ratelimit-") && !limited.has(address.address.toLowerCase())) {
        limited.add(address.address.toLowerCase());
        return callback(Object.assign(new Error("4.7.1 rate limited, try again later"), { responseCode: 451 }));
      }
      // No enhanced status code in these two (the server adds none: hideENHANCEDSTATUSCODES).
      if (local.startsWith("relaydeny-")) {
        return callback(Object.assign(new Error("Relaying denied"), { responseCode: 550 }));
      }
      if (local.startsWith("nouser-")) {
        return callback(Object.assign(new Error("User unknown in virtual mailbox table"), { responseCode: 550 }));
      }
      if (local.startsWith("temp-")) {
        return callback(Object.assign(new Error("4.3.0 Mailbox busy, try later"), { responseCode: 451 }));
      }
      callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const rcptTo = session.envelope.rcptTo.map((r) => r.address);
        const locals = rcptTo.map((r) => r.split("@")[0] ?? "");
        if (locals.some((l) => l.startsWith("dataperm-"))) {
          return callback(Object.assign(new Error("5.7.1 Message refused"), { responseCode: 554 }));
        }
        if (locals.some((l) => l.startsWith("datatemp-"))) {
          return callback(Object.assign(new Error("4.4.2 Try again later"), { responseCode: 451 }));
        }
        received.push({
          mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          rcptTo,
          user: (session.user as string | undefined) ?? null,
          raw: Buffer.concat(chunks).toString("latin1"),
          receivedAt: Date.now(),
          port: port(),
          secure: Boolean((session as { secure?: boolean }).secure),
        });
        callback(null, `Ok: queued as T${received.length}`);
      });
    },
  });
  const portOf = (server: SMTPServer) => () => (server.server.address() as AddressInfo).port;
  const servers: SMTPServer[] = [];
  const start = async (extra: Partial<SMTPServerOptions>) => {
    let self: SMTPServer | null = null;
    const server = new SMTPServer(options(extra, () => (self ? portOf(self)() : 0)));
    self = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    servers.push(server);
    return server;
  };
  const smtp = await start({});
  const starttls = await start({ disabledCommands: [], key: tls.key, cert: tls.cert });
  const implicit = await start({ secure: true, disabledCommands: [], key: tls.key, cert: tls.cert });
  const untrusted = await start({ secure: true, disabledCommands: [], key: tls.untrustedKey, cert: tls.untrustedCert });
  project.provide("smtpStarttlsPort", portOf(starttls)());
  project.provide("smtpTlsPort", portOf(implicit)());
  project.provide("smtpUntrustedTlsPort", portOf(untrusted)());
  // smtp-server re-emits every connection's socket error on the server. A client that drops its
  // connection (our client does not wait for QUIT's answer; a test ending tears down its Worker
  // mid-session) is a fact of the client's, not a failure of this server: without a listener the
  // 'error' event would kill the whole test run.
  for (const server of servers) {
    server.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ECONNRESET" || err.code === "EPIPE") return;
      // The untrusted server's handshakes fail on purpose.
      if (server === untrusted) return;
      console.error(`smtp test server: ${err.message}`);
    });
  }
  // vitest.config.ts hands this port to the Worker as SMTP_PORT.
  project.provide("smtpPort", (smtp.server.address() as AddressInfo).port);

  // GET /messages?rcpt=<address>: what the server accepted for that recipient, oldest first.
  // POST /dkim-verify {rcpt, dns}: runs mailauth (an independent DKIM verifier) on the exact bytes
  // last received for rcpt, answering its TXT lookups from `dns` (name → record) only.
  const control = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    if (req.method === "POST" && url.pathname === "/dkim-verify") {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const { rcpt: to, dns } = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
          rcpt: string;
          dns: Record<string, string>;
        };
        const last = received.filter((r) => r.rcptTo.some((a) => a.toLowerCase() === to.toLowerCase())).at(-1);
        if (!last) {
          res.writeHead(404).end();
          return;
        }
        const resolver = async (name: string, type: string) => {
          const record = type === "TXT" ? dns[name.toLowerCase()] : undefined;
          if (record === undefined) throw Object.assign(new Error(`queryTxt ENOTFOUND ${name}`), { code: "ENOTFOUND" });
          return [[record]];
        };
        dkimVerify(Buffer.from(last.raw, "latin1"), { resolver })
          .then((result) => {
            res.writeHead(200, { "Content-Type": "application/json" });
            res.end(JSON.stringify({ results: result.results }));
          })
          .catch((err: unknown) => {
            res.writeHead(500, { "Content-Type": "application/json" });
            res.end(JSON.stringify({ error: String(err) }));
          });
      });
      return;
    }
    const rcpt = url.searchParams.get("rcpt")?.toLowerCase();
    const list = rcpt ? received.filter((r) => r.rcptTo.some((a) => a.toLowerCase() === rcpt)) : received;
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify(list));
  });
  await new Promise<void>((resolve) => control.listen(0, "127.0.0.1", () => resolve()));
  project.provide("smtpControlUrl", `http://127.0.0.1:${(control.address() as AddressInfo).port}`);

  return async () => {
    for (const server of servers) await new Promise<void>((resolve) => server.close(() => resolve()));
    await new Promise<void>((resolve) => control.close(() => resolve()));
  };
}

declare module "vitest" {
  export interface ProvidedContext {
    smtpPort: number;
    smtpControlUrl: string;
    smtpStarttlsPort: number;
    smtpTlsPort: number;
    smtpUntrustedTlsPort: number;
  }
}
