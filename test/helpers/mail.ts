import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { vi } from "vitest";
import main from "../../src/index";

const worker = main as unknown as Required<ExportedHandler<Cloudflare.Env>>;

/** A stand-in for Email Routing's ForwardableEmailMessage (none can be built in user code). */
export function fakeInbound(raw: string | Uint8Array, envelope: { from: string; to: string }) {
  const bytes = typeof raw === "string" ? new TextEncoder().encode(raw) : raw;
  const headers = new Headers();
  const text = new TextDecoder().decode(bytes.subarray(0, 64 * 1024));
  const head = text.split(/\r?\n\r?\n/, 1)[0] ?? "";
  for (const line of head.split(/\r?\n(?![ \t])/)) {
    const i = line.indexOf(":");
    if (i > 0) {
      try {
        headers.append(
          line.slice(0, i).trim(),
          line
            .slice(i + 1)
            .replace(/\r?\n[ \t]+/g, " ")
            .trim(),
        );
      } catch {
        // a header Headers refuses (8-bit, odd names) is still in the raw bytes
      }
    }
  }
  return {
    ...envelope,
    headers,
    rawSize: bytes.byteLength,
    canBeForwarded: true,
    raw: new Response(bytes).body as ReadableStream<Uint8Array>,
    setReject: vi.fn<(reason: string) => void>(),
    forward: vi.fn(async () => ({ messageId: "<fwd@test>" })),
    reply: vi.fn(async () => ({ messageId: "<re@test>" })),
  } satisfies ForwardableEmailMessage;
}

/** Runs the Worker's email() handler the way Email Routing does; returns the fake message. */
export async function deliver(raw: string | Uint8Array, to: string, from = "sender@example.org") {
  const msg = fakeInbound(raw, { from, to });
  const ctx = createExecutionContext();
  await worker.email(msg, env, ctx);
  await waitOnExecutionContext(ctx);
  return msg;
}

let seq = 0;

/** A small RFC 5322 message with CRLF line ends; `headers` are added after the defaults. */
export function mail(opts: {
  from?: string;
  to?: string;
  subject?: string;
  messageId?: string | null;
  inReplyTo?: string;
  references?: string;
  headers?: Record<string, string>;
  contentType?: string;
  body?: string;
}): string {
  seq++;
  const lines = [
    `From: ${opts.from ?? "Ana Sender <ana@example.org>"}`,
    `To: ${opts.to ?? "someone@example.net"}`,
    `Subject: ${opts.subject ?? `Hello ${seq}`}`,
    "Date: Mon, 23 Nov 2026 10:00:00 +0000",
  ];
  if (opts.messageId !== null)
    lines.push(`Message-ID: ${opts.messageId ?? `<m${seq}.${crypto.randomUUID()}@example.org>`}`);
  if (opts.inReplyTo) lines.push(`In-Reply-To: ${opts.inReplyTo}`);
  if (opts.references) lines.push(`References: ${opts.references}`);
  for (const [k, v] of Object.entries(opts.headers ?? {})) lines.push(`${k}: ${v}`);
  lines.push("MIME-Version: 1.0", `Content-Type: ${opts.contentType ?? "text/plain; charset=utf-8"}`, "");
  return `${lines.join("\r\n")}\r\n${opts.body ?? "Hi there.\r\n"}`;
}
