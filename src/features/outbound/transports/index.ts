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
  return (env.OUTBOUND_TRANSPORT ?? (env.ENVIRONMENT === "production" ? "cloudflare" : "dev")).trim();
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
    const security = (env.SMTP_SECURITY ?? "starttls").trim();
    if (security !== "starttls" && security !== "tls" && security !== "none") {
      throw new TransportError(`SMTP_SECURITY must be starttls, tls or none (got ${security})`, false, "config");
    }
    if (security === "none" && env.ENVIRONMENT === "production") {
      throw new TransportError(
        "SMTP_SECURITY=none is refused in production: use starttls (587) or tls (465)",
        false,
        "config",
      );
    }
    if (!env.SMTP_HOST) throw new TransportError("OUTBOUND_TRANSPORT=smtp needs SMTP_HOST", false, "config");
    return smtpTransport({
      host: env.SMTP_HOST,
      port: Number(env.SMTP_PORT ?? (security === "tls" ? 465 : 587)),
      security,
      username: env.SMTP_USERNAME,
      password: env.SMTP_PASSWORD,
      heloName: env.SMTP_HELO_NAME ?? env.MAIL_DOMAIN,
      timeoutMs: 30_000,
    });
  }
  throw new TransportError(`Unknown OUTBOUND_TRANSPORT "${name}" (cloudflare, smtp or dev)`, false, "config");
}
