// events.stream against a scripted SSE server: parsing (comments, multi-line data, CRLF) and the
// automatic resume with Last-Event-ID after the server drops or ends a stream. The same client
// runs against the real GET /v1/events/stream in sdk.test.mjs once that endpoint exists.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { test } from "node:test";
import { AuthenticationError, Mailbot } from "../dist/index.js";

const event = (id, type = "inbox.created") => ({
  id,
  type,
  created_at: "2026-12-05T00:00:00.000Z",
  account_id: "acct_1",
  data: { n: id },
});

async function serve(handler) {
  const connections = [];
  const server = createServer((req, res) => {
    connections.push({ url: req.url, headers: req.headers, at: Date.now() });
    handler(req, res, connections.length);
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    connections,
    close: () =>
      new Promise((ok) => {
        server.closeAllConnections();
        server.close(ok);
      }),
  };
}

test("parses events and resumes with Last-Event-ID after a drop and after an end", { timeout: 20_000 }, async () => {
  const srv = await serve((req, res, n) => {
    res.writeHead(200, { "content-type": "text/event-stream" });
    if (n === 1) {
      res.write("retry: 10\r\n: hello\r\n\r\n");
      res.write(`id: evt_1\r\nevent: inbox.created\r\ndata: ${JSON.stringify(event("evt_1"))}\r\n\r\n`);
      setTimeout(() => req.socket.destroy(), 20); // dropped mid-stream
    } else if (n === 2) {
      // A multi-line data field: the lines join with "\n" (valid JSON between its tokens).
      const lines = JSON.stringify(event("evt_2"), null, 1).split("\n");
      res.write(`id: evt_2\nevent: inbox.created\n${lines.map((l) => `data: ${l}`).join("\n")}\n\n`);
      res.end(); // the server ends the stream after a while
    } else {
      res.write(`: heartbeat\n\nid: evt_3\nevent: inbox.created\ndata: ${JSON.stringify(event("evt_3"))}\n\n`);
    }
  });
  try {
    const mb = new Mailbot({ apiKey: "mb_test", baseUrl: srv.base, retryBaseMs: 10 });
    const stream = mb.events.stream({ types: ["inbox.*", "message.received"], inboxId: "inbox_1" });
    const ids = [];
    for await (const e of stream) {
      ids.push(e.id);
      if (ids.length === 3) break;
    }
    assert.deepEqual(ids, ["evt_1", "evt_2", "evt_3"]);
    assert.equal(stream.lastEventId, "evt_3");
    assert.equal(srv.connections[0].headers["last-event-id"], undefined);
    assert.equal(srv.connections[1].headers["last-event-id"], "evt_1");
    assert.equal(srv.connections[2].headers["last-event-id"], "evt_2");
    assert.equal(srv.connections[0].url, "/v1/events/stream?type=inbox.*&type=message.received&inbox_id=inbox_1");
    assert.equal(srv.connections[0].headers.authorization, "Bearer mb_test");
  } finally {
    await srv.close();
  }
});

test("a refusal (401) ends the stream with a typed error; a 429 is retried after Retry-After", async () => {
  const srv = await serve((_req, res, n) => {
    if (n === 1) {
      res.writeHead(429, { "content-type": "application/json", "retry-after": "0" });
      return res.end(JSON.stringify({ error: { code: "too_many_connections", message: "cap", request_id: "req_1" } }));
    }
    res.writeHead(401, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: { code: "invalid_api_key", message: "Invalid API key.", request_id: "req_2" } }));
  });
  try {
    const mb = new Mailbot({ apiKey: "mb_bad", baseUrl: srv.base, retryBaseMs: 10 });
    const err = await (async () => {
      for await (const _ of mb.events.stream()) {
        /* none */
      }
    })().catch((e) => e);
    assert.ok(err instanceof AuthenticationError);
    assert.equal(err.code, "invalid_api_key");
    assert.equal(err.requestId, "req_2");
    assert.equal(srv.connections.length, 2);
  } finally {
    await srv.close();
  }
});
