// A webhook receiver for local development: listens on http://127.0.0.1:<port>, verifies each
// delivery with verify.mjs (when MAILBOT_WEBHOOK_SECRET is set) and prints one line per event.
//   MAILBOT_WEBHOOK_SECRET=whsec_… node examples/webhooks/receiver.mjs [port]   (default 8788)
// `npm run dev` accepts http://127.0.0.1 webhook URLs (WEBHOOK_ALLOW_LOCAL=true in .dev.vars).
import { createServer } from "node:http";
import { fileURLToPath } from "node:url";
import { verifyMailbotSignature, verifyStandardWebhook } from "./verify.mjs";

/** Starts the receiver; `onDelivery({ event, verified, headers, body })` sees each delivery. Resolves to { url, close }. */
export function startReceiver({ port = 8788, secret = "", onDelivery = () => {} } = {}) {
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const verified = secret
        ? verifyStandardWebhook(secret, req.headers, body) && verifyMailbotSignature(secret, req.headers, body)
        : null;
      let event = null;
      try {
        event = JSON.parse(body.toString("utf8"));
      } catch {}
      onDelivery({ event, verified, headers: req.headers, body });
      res.writeHead(verified === false ? 401 : 200).end();
    });
  });
  return new Promise((ok, ko) => {
    server.once("error", ko);
    server.listen(port, "127.0.0.1", () => {
      const url = `http://127.0.0.1:${server.address().port}`;
      ok({ url, close: () => new Promise((done) => server.close(done)) });
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const secret = process.env.MAILBOT_WEBHOOK_SECRET ?? "";
  const { url } = await startReceiver({
    port: Number(process.argv[2] ?? 8788),
    secret,
    onDelivery: ({ event, verified }) => {
      const check = verified === null ? "not verified (no MAILBOT_WEBHOOK_SECRET)" : verified ? "signature ok" : "BAD SIGNATURE";
      const subject = event?.data?.subject ? ` "${event.data.subject}"` : "";
      console.log(`webhook: ${event?.type ?? "?"} ${event?.id ?? ""}${subject}: ${check}`);
    },
  });
  console.log(`webhook receiver on ${url}${secret ? "" : " (set MAILBOT_WEBHOOK_SECRET to verify signatures)"}`);
}
