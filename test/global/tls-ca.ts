/**
 * A throwaway certificate authority and a `localhost` certificate it signs, made with `openssl`
 * when the test run starts (vitest.config.ts), plus a self-signed `localhost` certificate no one
 * trusts. workerd trusts extra CAs from NODE_EXTRA_CA_CERTS (Miniflare hands it over), and it
 * reads that variable when it starts, so vitest.config.ts sets it before any Worker runs; the
 * TLS SMTP servers of test/global/smtp-server.ts serve these certificates.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

export interface TestTls {
  dir: string;
  caPem: string;
  /** Signed by the test CA, for `localhost` and 127.0.0.1. */
  key: string;
  cert: string;
  /** Self-signed, trusted by nobody. */
  untrustedKey: string;
  untrustedCert: string;
}

/** The directory vitest.config.ts made, handed to the global setup through the environment. */
export const TLS_DIR_ENV = "MAILBOT_TEST_TLS_DIR";

export function makeTestTls(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "mailbot-test-tls-"));
  const run = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  const san = "subjectAltName=DNS:localhost,IP:127.0.0.1";
  run(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=mailbot test CA",
  );
  run(
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "server.key",
    "-out",
    "server.csr",
    "-subj",
    "/CN=localhost",
    "-addext",
    san,
  );
  writeFileSync(
    path.join(dir, "ext.cnf"),
    `${san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n`,
  );
  run(
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "server.pem",
    "-days",
    "2",
    "-extfile",
    "ext.cnf",
  );
  run(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "untrusted.key",
    "-out",
    "untrusted.pem",
    "-days",
    "2",
    "-subj",
    "/CN=localhost",
    "-addext",
    san,
  );
  // The bundle workerd reads: whatever the machine already trusted (NODE_EXTRA_CA_CERTS may point
  // at the system bundle) and the test CA.
  const previous = process.env.NODE_EXTRA_CA_CERTS;
  const base = previous && existsSync(previous) ? readFileSync(previous, "utf8") : "";
  writeFileSync(path.join(dir, "bundle.pem"), `${base}\n${readFileSync(path.join(dir, "ca.pem"), "utf8")}`);
  return dir;
}

export function readTestTls(dir: string): TestTls {
  const read = (f: string) => readFileSync(path.join(dir, f), "utf8");
  return {
    dir,
    caPem: read("ca.pem"),
    key: read("server.key"),
    cert: read("server.pem"),
    untrustedKey: read("untrusted.key"),
    untrustedCert: read("untrusted.pem"),
  };
}
