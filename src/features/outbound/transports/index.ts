import { config, partialConfig } from "../../../config";
import type { Bindings } from "../../../env";
import { cloudflareTransport } from "./cloudflare";
import { devTransport } from "./dev";
import { smtpTransport } from "./smtp";
import { type Transport, TransportError } from "./types";

export type { OutboundEnvelope, Transport, TransportResult } from "./types";
export { TransportError } from "./types";

/**
 * The transport name OUTBOUND_TRANSPORT configures (trimmed), or the environment's default:
 * `cloudflare` in production, `dev` elsewhere. The one reading of the setting: selectTransport
 * and the DKIM signer (signOutbound) must agree on which transport a message leaves through.
 */
export function transportName(env: Pick<Bindings, "OUTBOUND_TRANSPORT" | "ENVIRONMENT">): string {
  return partialConfig(env).outboundTransport;
}

/**
 * The transport OUTBOUND_TRANSPORT names: `cloudflare` (production default), `smtp`, or `dev`
 * (the local default: nothing leaves the machine). A configuration mistake is a retryable
 * failure, so messages wait in the queue while the operator fixes it.
 */
export function selectTransport(env: Bindings): Transport {
  const name = transportName(env);
  if (name === "dev") return devTransport;
  if (name === "cloudflare") {
    if (!env.EMAIL)
      throw new TransportError("OUTBOUND_TRANSPORT=cloudflare needs the EMAIL send_email binding", false, "config");
    return cloudflareTransport(env.EMAIL);
  }
  if (name === "smtp") {
    const smtp = config(env).smtp;
    const security = smtp.security;
    if (security === "none" && config(env).isProduction) {
      throw new TransportError(
        "SMTP_SECURITY=none is refused in production: use starttls (587) or tls (465)",
        false,
        "config",
      );
    }
    if (!smtp.host) throw new TransportError("OUTBOUND_TRANSPORT=smtp needs SMTP_HOST", false, "config");
    return smtpTransport({
      host: smtp.host,
      port: smtp.port,
      security,
      username: smtp.username,
      password: env.SMTP_PASSWORD,
      heloName: smtp.heloName,
      timeoutMs: 30_000,
    });
  }
  throw new TransportError(`Unknown OUTBOUND_TRANSPORT "${name}" (cloudflare, smtp or dev)`, false, "config");
}
