import type { Bindings } from "../env";
import { MAX_INBOUND_BYTES, receiveMail } from "../features/inbound/inbound.service";
import { systemContext } from "../lib/context";
import { ContentRejected, MessageTooLarge, RecipientRejected } from "../lib/errors";
import { newId } from "../lib/ids";
import { log } from "../lib/log";

/**
 * The `email()` adapter for Cloudflare Email Routing. Refusals use `setReject`, which the
 * sender's MTA sees as a permanent 5xx with our reason. Any other failure is thrown, so the
 * message is not acknowledged as delivered (nothing is accepted and then lost).
 */
export async function handleEmail(message: ForwardableEmailMessage, env: Bindings): Promise<void> {
  const requestId = newId("req");
  if (message.rawSize > MAX_INBOUND_BYTES) {
    message.setReject(`Message too large: the limit is ${MAX_INBOUND_BYTES} bytes (25 MiB)`);
    return;
  }
  try {
    const result = await receiveMail(systemContext(env, { requestId }), {
      readRaw: async () => new Uint8Array(await new Response(message.raw).arrayBuffer()),
      envelopeFrom: message.from || null,
      envelopeTo: message.to,
      via: "email_routing",
      requestId,
    });
    log.info("inbound mail", {
      request_id: requestId,
      outcome: result.outcome,
      message_id: result.messageId,
      inbox_id: result.inboxId,
      size: message.rawSize,
    });
  } catch (err) {
    if (err instanceof RecipientRejected) {
      message.setReject(err.message);
      return;
    }
    if (err instanceof ContentRejected) {
      // The inbox's screening policy or its sender block list: a 5xx the sender's MTA shows.
      message.setReject(err.message);
      return;
    }
    if (err instanceof MessageTooLarge) {
      message.setReject(err.message);
      return;
    }
    log.error("inbound mail failed", { request_id: requestId, error: String(err) });
    throw err;
  }
}
