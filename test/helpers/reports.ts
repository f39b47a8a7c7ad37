import { env } from "cloudflare:workers";
import { bounceAddress } from "../../src/features/bounces/bounce-address";

/** FEEDBACK_LOOP_SOURCES of the test configuration (vitest.config.ts). */
export const FBL_SOURCE = "fbl.example-isp.net";

/**
 * The bounce address a recipient's copy of one of our messages left with: the one the message
 * row records, else (for rows the test inserted) the one the server would have used.
 */
export async function bounceAddressOf(messageId: string, recipient: string): Promise<string> {
  const row = await env.DB.prepare("SELECT bounce_addresses, inbox_id FROM messages WHERE id = ?")
    .bind(messageId)
    .first<{ bounce_addresses: string | null; inbox_id: string }>();
  const recorded = row?.bounce_addresses ? (JSON.parse(row.bounce_addresses) as Record<string, string>) : {};
  if (recorded[recipient]) return recorded[recipient];
  const inbox = await env.DB.prepare("SELECT address FROM inboxes WHERE id = ?")
    .bind(row?.inbox_id ?? "")
    .first<{ address: string }>();
  return bounceAddress(env, inbox?.address ?? "", messageId, recipient);
}

/** A report as our receiver hands it on from a feedback loop: DKIM-signed by the loop, per a trusted header. */
export function fromFeedbackLoop(raw: string, domain = FBL_SOURCE): string {
  const nl = raw.includes("\r\n") ? "\r\n" : "\n";
  return `Authentication-Results: mx.cloudflare.net; dkim=pass header.d=${domain} header.s=fbl; spf=pass${nl}${raw}`;
}

/** Delivery reports recorded about (or carried by) a message. */
export async function reportRows(where: string, ...binds: unknown[]) {
  return (
    await env.DB.prepare(`SELECT * FROM delivery_reports WHERE ${where} ORDER BY id`)
      .bind(...binds)
      .all<Record<string, unknown>>()
  ).results;
}
