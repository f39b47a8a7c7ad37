// A tiny Worker for bench/inbound.mjs: parses the posted message `k` times in workerd and says
// how long that took, so postal-mime's own cost is measured in the same runtime as the pipeline.
// POST /?k=200&mode=postal-mime|parseMail   body: the raw message
import PostalMime from "postal-mime";
import { PARSE_OPTIONS, parseMail } from "../src/mail/parse.ts";

export default {
  async fetch(request) {
    const url = new URL(request.url);
    const k = Number(url.searchParams.get("k") ?? "1");
    const mode = url.searchParams.get("mode") ?? "postal-mime";
    const raw = new Uint8Array(await request.arrayBuffer());
    let attachments = -1;
    const t0 = performance.now();
    for (let i = 0; i < k; i++) {
      if (mode === "parseMail") {
        const parsed = await parseMail(raw);
        if (parsed.parseError) return Response.json({ error: parsed.parseError }, { status: 500 });
        attachments = parsed.attachments.length;
      } else {
        attachments = (await PostalMime.parse(raw, PARSE_OPTIONS)).attachments.length;
      }
    }
    return Response.json({ k, mode, ms: performance.now() - t0, attachments });
  },
};
