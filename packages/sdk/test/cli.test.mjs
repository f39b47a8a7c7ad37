// The `mailbot` CLI end to end, from the packed tarball (`npm pack`) installed in a temp folder,
// against a real `wrangler dev` of this repo.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { deliver, hasEventStream, register, sampleMail, sleep, startWorker } from "./helpers.mjs";

const PKG = fileURLToPath(new URL("..", import.meta.url));
const NPM_ENV = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH}` };
let worker;
let reg;
let dir;
let bin;
let env;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "mailbot-cli-"));
  // `npm pack` runs the package's prepack (the build): the tarball is what a user installs.
  const packed = execFileSync("npm", ["pack", "--json", "--pack-destination", dir], { cwd: PKG, env: NPM_ENV });
  const tarball = join(dir, JSON.parse(packed.toString())[0].filename);
  const app = join(dir, "app");
  execFileSync("mkdir", ["-p", app]);
  writeFileSync(join(app, "package.json"), '{ "name": "cli-test", "private": true }\n');
  execFileSync("npm", ["install", "--no-audit", "--no-fund", "--offline", tarball], {
    cwd: app,
    env: NPM_ENV,
    stdio: "ignore",
  });
  bin = join(app, "node_modules/.bin/mailbot");
  worker = await startWorker("mailbot-cli-test");
  reg = await register(worker.base);
  const { MAILBOT_API_KEY: _k, MAILBOT_BASE_URL: _b, ...rest } = NPM_ENV;
  env = { ...rest, HOME: dir, XDG_CONFIG_HOME: join(dir, "config") };
});

after(async () => {
  await worker?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Runs the installed CLI: { code, stdout, stderr }. */
function mailbot(args, { extraEnv = {} } = {}) {
  return new Promise((resolve) => {
    const child = spawn(bin, args, { env: { ...env, ...extraEnv } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

const json = (r) => {
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
};

let inbox;

test("login saves the key in a 0600 file; whoami", async () => {
  const login = await mailbot(["login", "--base-url", worker.base, "--key", reg.api_key]);
  assert.equal(login.code, 0, login.stderr);
  const file = join(dir, "config", "mailbot", "config.json");
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.equal(json(await mailbot(["whoami", "--json"])).id, reg.account.id);
  const table = await mailbot(["whoami"]);
  assert.match(table.stdout, new RegExp(reg.account.id));
  // The environment overrides the saved key.
  const bad = await mailbot(["whoami"], { extraEnv: { MAILBOT_API_KEY: "mb_0000000000000000000000000000000000" } });
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /\(invalid_api_key\)/);
});

test("inboxes create, list, disable, enable; an API error prints message and code and exits non-zero", async () => {
  inbox = json(await mailbot(["inboxes", "create", "support", "--display-name", "Support", "--json"]));
  assert.equal(inbox.username, "support");
  const again = await mailbot(["inboxes", "create", "support"]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /^error: .+ \(address_taken\)/);
  const list = await mailbot(["inboxes", "list"]);
  assert.match(list.stdout, /ADDRESS/);
  assert.ok(list.stdout.includes(inbox.address));
  assert.equal(json(await mailbot(["inboxes", "disable", inbox.id, "--json"])).status, "disabled");
  assert.equal(json(await mailbot(["inboxes", "enable", inbox.id, "--json"])).status, "active");
});

test("send with an attachment", async () => {
  const note = join(dir, "note.txt");
  writeFileSync(note, "attached words");
  const sent = json(
    await mailbot([
      "send",
      "--inbox",
      inbox.id,
      "--to",
      "grace@example.org",
      "--subject",
      "From the CLI",
      "--text",
      "Hello Grace.",
      "--attach",
      note,
      "--json",
    ]),
  );
  assert.equal(sent.status, "queued");
  assert.equal(sent.attachments[0].filename, "note.txt");
  const listed = await mailbot(["messages", "list", inbox.id]);
  assert.ok(listed.stdout.includes("From the CLI"));
});

test("wait for a message, then read it", async () => {
  const since = new Date(Date.now() - 1000).toISOString();
  const waiting = mailbot([
    "wait",
    inbox.id,
    "--from",
    "ada@example.com",
    "--since",
    since,
    "--timeout",
    "60",
    "--json",
  ]);
  await sleep(1000);
  const d = await deliver({ raw: sampleMail({ to: inbox.address }), to: inbox.address, url: worker.base });
  assert.equal(d.status, 200, d.text);
  const found = json(await waiting);
  assert.equal(found.subject, "Notes for Thursday");
  const shown = await mailbot(["messages", "get", inbox.id, found.id]);
  assert.match(shown.stdout, /Subject: Notes for Thursday/);
  assert.match(shown.stdout, /sort them by priority/);
  const none = await mailbot(["wait", inbox.id, "--from", "nobody@example.com", "--timeout", "1"]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /\(wait_timeout\)/);
});

test("events tail --once prints one event", async (t) => {
  if (!(await hasEventStream(worker.base, reg.api_key))) {
    return t.skip("GET /v1/events/stream answers 404 (not merged yet)");
  }
  const [last] = (
    await (
      await fetch(`${worker.base}/v1/events?limit=1`, { headers: { authorization: `Bearer ${reg.api_key}` } })
    ).json()
  ).data;
  const tail = mailbot(["events", "tail", "--type", "inbox.*", "--after", last.id, "--once", "--json"]);
  await sleep(500);
  const made = json(await mailbot(["inboxes", "create", "tailed", "--json"]));
  const out = await tail;
  assert.equal(out.code, 0, out.stderr);
  const event = JSON.parse(out.stdout.trim());
  assert.equal(event.type, "inbox.created");
  assert.equal(event.data.inbox_id ?? event.data.id, made.id);
});

test("webhooks verify: both schemes accepted, a tampered body refused", async () => {
  const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const body = '{"id":"evt_1","type":"message.received","data":{}}';
  const file = join(dir, "body.json");
  writeFileSync(file, body);
  const ts = String(Math.floor(Date.now() / 1000));
  const std = createHmac("sha256", Buffer.from(secret.slice(6), "base64"))
    .update(`evt_1.${ts}.${body}`)
    .digest("base64");
  const ours = createHmac("sha256", secret).update(`${ts}.${body}`).digest("hex");
  const standard = [
    "--header",
    "webhook-id: evt_1",
    "--header",
    `webhook-timestamp: ${ts}`,
    "--header",
    `webhook-signature: v1,${std}`,
  ];
  const mailbotSig = ["--header", `X-Mailbot-Timestamp: ${ts}`, "--header", `X-Mailbot-Signature: sha256=${ours}`];
  const a = await mailbot(["webhooks", "verify", "--secret", secret, "--body-file", file, ...standard]);
  assert.equal(a.code, 0, a.stderr);
  assert.match(a.stdout, /valid \(standard/);
  const b = await mailbot(["webhooks", "verify", "--secret", secret, "--body-file", file, ...mailbotSig]);
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stdout, /valid \(mailbot/);
  writeFileSync(file, body.replace("evt_1", "evt_2"));
  const c = await mailbot(["webhooks", "verify", "--secret", secret, "--body-file", file, ...standard, ...mailbotSig]);
  assert.equal(c.code, 1);
  assert.match(c.stdout, /invalid: signature_mismatch/);
});
