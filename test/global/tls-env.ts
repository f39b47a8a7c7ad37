/**
 * Called by vitest.config.ts before the Cloudflare plugin (and Miniflare) load: makes the test CA
 * and points NODE_EXTRA_CA_CERTS at a bundle that includes it, so every workerd started afterwards
 * trusts the TLS SMTP servers' certificates (see tls-ca.ts).
 */
import path from "node:path";
import { makeTestTls, TLS_DIR_ENV } from "./tls-ca.ts";

export function useTestCa(): void {
  if (process.env[TLS_DIR_ENV]) return;
  const dir = makeTestTls();
  process.env[TLS_DIR_ENV] = dir;
  process.env.NODE_EXTRA_CA_CERTS = path.join(dir, "bundle.pem");
}
