import { connect } from "cloudflare:sockets";

/**
 * A small SMTP submission client over `cloudflare:sockets` (RFC 5321, 3207 STARTTLS, 4954 AUTH).
 *
 * Written here rather than taken from `worker-mailer`: that library composes its own MIME (we
 * send the exact bytes we stored and will DKIM-sign), reports no per-recipient outcome (a 550 at
 * RCPT is a bounce we must count), ignores its response timeout and sends a bare-IP EHLO.
 * Submission relays only: Workers cannot open port 25.
 */

export interface SmtpConfig {
  host: string;
  port: number;
  /** `starttls` (587, TLS required), `tls` (465, implicit), `none` (plain text: tests and local relays only). */
  security: "starttls" | "tls" | "none";
  username?: string | undefined;
  password?: string | undefined;
  /** Our name in EHLO. */
  heloName: string;
  /** Longest wait for any one reply. */
  timeoutMs: number;
}

export interface SmtpRecipientFailure {
  recipient: string;
  code: number;
  message: string;
}

export interface SmtpResult {
  accepted: string[];
  rejected: SmtpRecipientFailure[];
  /** What the server said after the data ("250 2.0.0 Ok: queued as 4F3A…"). */
  response: string;
}

/** A failure of the whole transaction. `code` is the SMTP reply code (0: network or protocol). */
export class SmtpError extends Error {
  constructor(
    message: string,
    readonly code: number,
    readonly stage: string,
  ) {
    super(message);
    this.name = "SmtpError";
  }

  /** 5xx replies are permanent; 4xx, network errors and timeouts are worth retrying. */
  get permanent(): boolean {
    return this.code >= 500;
  }
}

interface Reply {
  code: number;
  lines: string[];
}

const encoder = new TextEncoder();

class Connection {
  private buffer = "";
  private readonly decoder = new TextDecoder();
  private reader: ReadableStreamDefaultReader<Uint8Array>;
  private writer: WritableStreamDefaultWriter<Uint8Array>;

  constructor(
    private socket: Socket,
    private readonly timeoutMs: number,
  ) {
    this.reader = socket.readable.getReader();
    this.writer = socket.writable.getWriter();
  }

  /** Reads one (possibly multi-line) reply. */
  async reply(stage: string): Promise<Reply> {
    for (;;) {
      const parsed = this.take();
      if (parsed) return parsed;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new SmtpError(`No reply within ${this.timeoutMs} ms (${stage})`, 0, stage)),
          this.timeoutMs,
        );
      });
      try {
        const { value, done } = await Promise.race([this.reader.read(), timeout]);
        if (done) throw new SmtpError(`The server closed the connection (${stage})`, 0, stage);
        this.buffer += this.decoder.decode(value, { stream: true });
        if (this.buffer.length > 64 * 1024) throw new SmtpError("Reply too long", 0, stage);
      } finally {
        clearTimeout(timer);
      }
    }
  }

  /** A complete reply at the front of the buffer, consumed; null when more bytes are needed. */
  private take(): Reply | null {
    const lines: string[] = [];
    let offset = 0;
    for (;;) {
      const end = this.buffer.indexOf("\n", offset);
      if (end === -1) return null;
      const line = this.buffer.slice(offset, end).replace(/\r$/, "");
      offset = end + 1;
      const m = /^(\d{3})([ -]?)(.*)$/.exec(line);
      if (!m) throw new SmtpError(`Malformed reply line: ${line.slice(0, 100)}`, 0, "reply");
      lines.push(m[3] ?? "");
      if (m[2] !== "-") {
        this.buffer = this.buffer.slice(offset);
        return { code: Number(m[1]), lines };
      }
    }
  }

  async write(data: string | Uint8Array): Promise<void> {
    await this.writer.write(typeof data === "string" ? encoder.encode(data) : data);
  }

  /** Sends a command and reads its reply; a reply outside `expect` throws. */
  async command(line: string, expect: number[], stage: string): Promise<Reply> {
    await this.write(`${line}\r\n`);
    const r = await this.reply(stage);
    if (!expect.includes(r.code)) throw new SmtpError(`${stage}: ${r.code} ${r.lines.join(" ")}`, r.code, stage);
    return r;
  }

  /** RFC 3207: the plain-text streams are released and the socket upgraded in place. */
  upgrade(): void {
    this.reader.releaseLock();
    this.writer.releaseLock();
    this.socket = this.socket.startTls();
    this.reader = this.socket.readable.getReader();
    this.writer = this.socket.writable.getWriter();
    this.buffer = "";
  }

  /** Not awaited: close() has been seen to hang after QUIT in production (worker-mailer#28). */
  close(): void {
    this.socket.close().catch(() => {
      // Already closed by the server after QUIT: nothing left to release.
    });
  }
}

/** The EHLO keywords (upper-case) with their parameters. */
function capabilities(reply: Reply): Map<string, string> {
  const caps = new Map<string, string>();
  for (const line of reply.lines.slice(1)) {
    const [word, ...rest] = line.trim().split(/\s+/);
    if (word) caps.set(word.toUpperCase(), rest.join(" ").toUpperCase());
  }
  return caps;
}

/**
 * RFC 5321 §4.5.2 transparency: a line that starts with "." gets another one. The message
 * must end in CRLF before the terminating ".".
 */
export function dotStuff(raw: Uint8Array): Uint8Array {
  let extra = 0;
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === 0x2e && (i === 0 || raw[i - 1] === 0x0a)) extra++;
  }
  const endsWithCrlf = raw.length >= 2 && raw[raw.length - 2] === 0x0d && raw[raw.length - 1] === 0x0a;
  const out = new Uint8Array(raw.length + extra + (endsWithCrlf ? 0 : 2) + 3);
  let j = 0;
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === 0x2e && (i === 0 || raw[i - 1] === 0x0a)) out[j++] = 0x2e;
    out[j++] = raw[i] as number;
  }
  if (!endsWithCrlf) {
    out[j++] = 0x0d;
    out[j++] = 0x0a;
  }
  out.set([0x2e, 0x0d, 0x0a], j);
  return out;
}

/** One SMTP transaction: connect, EHLO, STARTTLS, AUTH, MAIL, RCPT (each), DATA, QUIT. */
export async function smtpSend(
  config: SmtpConfig,
  mailFrom: string,
  recipients: string[],
  raw: Uint8Array,
): Promise<SmtpResult> {
  let socket: Socket;
  try {
    socket = connect(
      { hostname: config.host, port: config.port },
      {
        secureTransport: config.security === "tls" ? "on" : config.security === "starttls" ? "starttls" : "off",
        allowHalfOpen: false,
      },
    );
  } catch (err) {
    throw new SmtpError(`Cannot connect to ${config.host}:${config.port}: ${String(err)}`, 0, "connect");
  }
  const conn = new Connection(socket, config.timeoutMs);
  try {
    const greeting = await conn.reply("greeting");
    if (greeting.code !== 220) {
      throw new SmtpError(`greeting: ${greeting.code} ${greeting.lines.join(" ")}`, greeting.code, "greeting");
    }
    let caps = capabilities(await conn.command(`EHLO ${config.heloName}`, [250], "ehlo"));
    if (config.security === "starttls") {
      if (!caps.has("STARTTLS"))
        throw new SmtpError("The relay does not offer STARTTLS, which is required", 0, "starttls");
      await conn.command("STARTTLS", [220], "starttls");
      conn.upgrade();
      caps = capabilities(await conn.command(`EHLO ${config.heloName}`, [250], "ehlo"));
    }
    if (config.username) {
      const methods = (caps.get("AUTH") ?? "").split(/\s+/);
      if (methods.includes("PLAIN") || !methods.includes("LOGIN")) {
        const token = btoa(String.fromCharCode(...encoder.encode(`\0${config.username}\0${config.password ?? ""}`)));
        await conn.command(`AUTH PLAIN ${token}`, [235], "auth");
      } else {
        await conn.command("AUTH LOGIN", [334], "auth");
        await conn.command(btoa(String.fromCharCode(...encoder.encode(config.username))), [334], "auth");
        await conn.command(btoa(String.fromCharCode(...encoder.encode(config.password ?? ""))), [235], "auth");
      }
    }
    const size = caps.has("SIZE") ? ` SIZE=${raw.byteLength}` : "";
    await conn.command(`MAIL FROM:<${mailFrom}>${size}`, [250], "mail");
    const accepted: string[] = [];
    const rejected: SmtpRecipientFailure[] = [];
    for (const rcpt of recipients) {
      await conn.write(`RCPT TO:<${rcpt}>\r\n`);
      const r = await conn.reply("rcpt");
      if (r.code === 250 || r.code === 251) accepted.push(rcpt);
      else rejected.push({ recipient: rcpt, code: r.code, message: r.lines.join(" ").slice(0, 300) });
    }
    if (accepted.length === 0) {
      await conn.write("RSET\r\n").catch(() => {});
      const permanent = rejected.every((f) => f.code >= 500);
      const first = rejected[0];
      throw Object.assign(
        new SmtpError(
          `Every recipient was refused: ${rejected.map((f) => `${f.recipient} ${f.code} ${f.message}`).join("; ")}`,
          permanent ? (first?.code ?? 550) : 451,
          "rcpt",
        ),
        { rejected },
      );
    }
    await conn.command("DATA", [354], "data");
    await conn.write(dotStuff(raw));
    const done = await conn.reply("data-end");
    if (done.code !== 250) throw new SmtpError(`data: ${done.code} ${done.lines.join(" ")}`, done.code, "data-end");
    await conn.write("QUIT\r\n").catch(() => {});
    return { accepted, rejected, response: `${done.code} ${done.lines.join(" ")}`.slice(0, 300) };
  } catch (err) {
    if (err instanceof SmtpError) throw err;
    throw new SmtpError(`SMTP connection failed: ${String(err)}`, 0, "io");
  } finally {
    conn.close();
  }
}
