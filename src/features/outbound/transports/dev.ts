import type { Transport } from "./types";

/**
 * The local default: nothing leaves the machine. The exact bytes are already in R2 (the raw
 * endpoint serves them), so "sending" is recording that every recipient accepted the message.
 */
export const devTransport: Transport = {
  name: "dev",
  async send(envelope) {
    return { accepted: envelope.recipients, rejected: [], providerMessageId: `dev:${envelope.message.id}` };
  },
};
