#!/usr/bin/env node
// `mailbot`: the command line of @mailbot/sdk. Config in ~/.config/mailbot/config.json (mode
// 0600; MAILBOT_CONFIG points elsewhere); MAILBOT_API_KEY and MAILBOT_BASE_URL override it.
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { basename, dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { Mailbot } from "./client.js";
import { MailbotError } from "./errors.js";
import { checkWebhook } from "./webhook-signature.js";

const USAGE = `mailbot: the mailbot API from a terminal

  mailbot login --base-url URL --key KEY
  mailbot whoami
  mailbot inboxes list | create <username> [--display-name N] | disable <id> | enable <id>
  mailbot send --inbox ID --to ADDR... --subject S (--text T | --html-file F) [--attach F]...
  mailbot messages list <inbox> | messages get <inbox> <id>
  mailbot wait <inbox> [--from X] [--subject-contains S] [--since ISO] [--timeout SECONDS]
  mailbot events tail [--type T]... [--inbox I] [--after EVT] [--once]
  mailbot webhooks verify --secret S --body-file F --header 'name: value'...

Every command takes --json (print the API objects). Environment: MAILBOT_API_KEY,
MAILBOT_BASE_URL (override the saved login), MAILBOT_CONFIG (config file path).`;

interface Config {
  base_url?: string;
  api_key?: string;
}

const configPath = () =>
  process.env.MAILBOT_CONFIG ??
  join(process.env.XDG_CONFIG_HOME || join(homedir(), ".config"), "mailbot", "config.json");

function readConfig(): Config {
  try {
    return JSON.parse(readFileSync(configPath(), "utf8")) as Config;
  } catch {
    return {};
  }
}

function writeConfig(config: Config): string {
  const path = configPath();
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  // An existing file keeps its mode on write: the key inside is a secret, so narrow it again.
  chmodSync(path, 0o600);
  return path;
}

function client(): Mailbot {
  const config = readConfig();
  const apiKey = process.env.MAILBOT_API_KEY || config.api_key;
  const baseUrl = process.env.MAILBOT_BASE_URL || config.base_url;
  if (!apiKey)
    throw new UsageError("not logged in: run `mailbot login --base-url URL --key KEY` or set MAILBOT_API_KEY");
  return new Mailbot({ apiKey, baseUrl });
}

class UsageError extends Error {}

let json = false;
const out = (line = "") => process.stdout.write(`${line}\n`);

function print(value: unknown, columns?: string[]): void {
  if (json) {
    out(JSON.stringify(value, null, 2));
    return;
  }
  const rows = Array.isArray(value) ? value : [value];
  if (!columns) {
    for (const [k, v] of Object.entries(value as object)) out(`${k.padEnd(18)} ${format(v)}`);
    return;
  }
  const cells = rows.map((r) => columns.map((c) => format((r as Record<string, unknown>)[c])));
  const widths = columns.map((c, i) => Math.min(48, Math.max(c.length, ...cells.map((row) => row[i]!.length))));
  out(columns.map((c, i) => c.toUpperCase().padEnd(widths[i]!)).join("  "));
  for (const row of cells) out(row.map((cell, i) => cell.slice(0, 48).padEnd(widths[i]!)).join("  "));
  if (rows.length === 0) out("(none)");
}

function format(v: unknown): string {
  if (v === null || v === undefined) return "";
  if (Array.isArray(v)) return v.map(format).join(", ");
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/** A spinner on stderr while `work` runs, only when stdout is a terminal. */
async function withProgress<T>(label: string, work: Promise<T>): Promise<T> {
  if (!process.stdout.isTTY || json) return work;
  const frames = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
  const started = Date.now();
  let i = 0;
  const timer = setInterval(() => {
    const s = Math.round((Date.now() - started) / 1000);
    process.stderr.write(`\r${frames[i++ % frames.length]} ${label} (${s} s)`);
  }, 100);
  try {
    return await work;
  } finally {
    clearInterval(timer);
    process.stderr.write("\r\x1b[K");
  }
}

function mimeType(file: string): string {
  const ext = file.toLowerCase().split(".").pop() ?? "";
  const types: Record<string, string> = {
    txt: "text/plain",
    html: "text/html",
    csv: "text/csv",
    json: "application/json",
    pdf: "application/pdf",
    png: "image/png",
    jpg: "image/jpeg",
    jpeg: "image/jpeg",
    gif: "image/gif",
    zip: "application/zip",
    eml: "message/rfc822",
  };
  return types[ext] ?? "application/octet-stream";
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
      "base-url": { type: "string" },
      key: { type: "string" },
      "display-name": { type: "string" },
      inbox: { type: "string" },
      to: { type: "string", multiple: true },
      cc: { type: "string", multiple: true },
      subject: { type: "string" },
      text: { type: "string" },
      "html-file": { type: "string" },
      attach: { type: "string", multiple: true },
      from: { type: "string" },
      "subject-contains": { type: "string" },
      since: { type: "string" },
      timeout: { type: "string" },
      type: { type: "string", multiple: true },
      after: { type: "string" },
      once: { type: "boolean" },
      secret: { type: "string" },
      "body-file": { type: "string" },
      header: { type: "string", multiple: true },
      limit: { type: "string" },
    },
  });
  json = values.json ?? false;
  const [cmd, sub, ...rest] = positionals;
  if (values.help || !cmd || cmd === "help") {
    out(USAGE);
    return 0;
  }
  const need = (v: string | undefined, what: string): string => {
    if (!v) throw new UsageError(`missing ${what}`);
    return v;
  };
  const limit = values.limit ? Number(values.limit) : undefined;

  switch (cmd) {
    case "login": {
      const baseUrl = need(values["base-url"] ?? process.env.MAILBOT_BASE_URL, "--base-url");
      const apiKey = need(values.key ?? process.env.MAILBOT_API_KEY, "--key");
      const account = await new Mailbot({ apiKey, baseUrl }).account.retrieve();
      const path = writeConfig({ base_url: baseUrl, api_key: apiKey });
      if (json) print(account);
      else out(`Logged in to ${baseUrl} as ${account.name ?? account.email} (${account.id}); saved to ${path}`);
      return 0;
    }
    case "whoami": {
      const mb = client();
      const account = await mb.account.retrieve();
      if (json) print(account);
      else
        print({
          id: account.id,
          name: account.name,
          email: account.email,
          tier: account.tier,
          base_url: mb.http.baseUrl,
        });
      return 0;
    }
    case "inboxes": {
      const mb = client();
      const cols = ["id", "address", "status", "disabled_reason", "display_name"];
      if (sub === "list" || sub === undefined) print((await mb.inboxes.list({ limit })).data, cols);
      else if (sub === "create")
        print(
          await mb.inboxes.create({ username: need(rest[0], "<username>"), display_name: values["display-name"] }),
          json ? undefined : cols,
        );
      else if (sub === "disable") print(await mb.inboxes.disable(need(rest[0], "<id>")), json ? undefined : cols);
      else if (sub === "enable") print(await mb.inboxes.enable(need(rest[0], "<id>")), json ? undefined : cols);
      else throw new UsageError(`unknown inboxes command: ${sub}`);
      return 0;
    }
    case "send": {
      const mb = client();
      const inbox = need(values.inbox, "--inbox");
      if (!values.to?.length) throw new UsageError("missing --to");
      if (!values.text && !values["html-file"]) throw new UsageError("give --text or --html-file");
      const attachments = (values.attach ?? []).map((file) => ({
        filename: basename(file),
        content: readFileSync(file).toString("base64"),
        content_type: mimeType(file),
      }));
      const sent = await mb.messages.send(inbox, {
        to: values.to,
        cc: values.cc,
        subject: need(values.subject, "--subject"),
        body_text: values.text,
        body_html: values["html-file"] ? readFileSync(values["html-file"], "utf8") : undefined,
        attachments: attachments.length ? attachments : undefined,
      });
      print(sent, json ? undefined : ["id", "status", "to", "subject", "thread_id"]);
      return 0;
    }
    case "messages": {
      const mb = client();
      if (sub === "list" || sub === undefined) {
        const page = await mb.messages.list(need(rest[0], "<inbox>"), { limit });
        print(page.data, ["id", "direction", "status", "from_address", "subject", "created_at"]);
      } else if (sub === "get") {
        const m = await mb.messages.retrieve(need(rest[0], "<inbox>"), need(rest[1], "<id>"));
        if (json) print(m);
        else {
          out(`From:    ${m.from_name ? `${m.from_name} <${m.from_address}>` : m.from_address}`);
          out(`To:      ${format(m.to)}`);
          out(`Subject: ${m.subject ?? ""}`);
          out(`Date:    ${m.received_at ?? m.sent_at ?? m.created_at}`);
          out(`Id:      ${m.id} (${m.direction}, ${m.status})`);
          for (const a of m.attachments ?? []) out(`Attach:  ${a.filename} (${a.content_type}, ${a.size} bytes)`);
          out();
          out(m.body_text ?? "");
        }
      } else throw new UsageError(`unknown messages command: ${sub}`);
      return 0;
    }
    case "wait": {
      const mb = client();
      const inbox = need(sub, "<inbox>");
      const timeoutMs = Number(values.timeout ?? "60") * 1000;
      const found = await withProgress(
        `waiting for mail in ${inbox}`,
        mb.messages.waitFor(inbox, {
          from_address: values.from,
          subject_contains: values["subject-contains"],
          since: values.since,
          timeoutMs,
        }),
      );
      print(found, json ? undefined : ["id", "from_address", "subject", "received_at"]);
      return 0;
    }
    case "events": {
      if (sub !== "tail") throw new UsageError(`unknown events command: ${sub}`);
      const mb = client();
      const stream = mb.events.stream({ types: values.type, inboxId: values.inbox, after: values.after });
      process.once("SIGINT", () => stream.close());
      const iterator = stream[Symbol.asyncIterator]();
      for (;;) {
        const next = await withProgress("waiting for events", iterator.next());
        if (next.done) break;
        const e = next.value;
        if (json) out(JSON.stringify(e));
        else out(`${e.created_at}  ${e.id}  ${e.type.padEnd(18)} ${format((e.data as { subject?: unknown }).subject)}`);
        if (values.once) {
          stream.close();
          await iterator.return?.();
          break;
        }
      }
      return 0;
    }
    case "webhooks": {
      if (sub !== "verify") throw new UsageError(`unknown webhooks command: ${sub}`);
      const headers: Record<string, string> = {};
      for (const h of values.header ?? []) {
        const colon = h.indexOf(":");
        if (colon < 1) throw new UsageError(`--header wants 'name: value', got ${h}`);
        headers[h.slice(0, colon).trim().toLowerCase()] = h.slice(colon + 1).trim();
      }
      const body = readFileSync(need(values["body-file"], "--body-file"));
      const result = await checkWebhook(headers, body, need(values.secret, "--secret"));
      if (json) print(result);
      else out(result.ok ? `valid (${result.scheme} signature)` : `invalid: ${result.reason}`);
      return result.ok ? 0 : 1;
    }
    default:
      throw new UsageError(`unknown command: ${cmd}\n\n${USAGE}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof MailbotError) {
      if (json) {
        process.stderr.write(
          `${JSON.stringify({ error: { code: err.code, message: err.message, details: err.details, request_id: err.requestId } })}\n`,
        );
      } else {
        process.stderr.write(`error: ${err.message} (${err.code})${err.requestId ? ` [${err.requestId}]` : ""}\n`);
      }
    } else if (err instanceof UsageError || (err as { code?: string })?.code?.startsWith?.("ERR_PARSE_ARGS")) {
      process.stderr.write(`error: ${(err as Error).message} (usage)\n`);
      process.exitCode = 2;
      return;
    } else {
      process.stderr.write(`error: ${(err as Error)?.message ?? String(err)}\n`);
    }
    process.exitCode = 1;
  },
);
