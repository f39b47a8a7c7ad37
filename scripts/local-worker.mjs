// Starts this Worker under `wrangler dev` on a free loopback port with its own throwaway state
// (migrations applied first), for the benchmark and the smoke test. Always stops it again.
import { spawn, spawnSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const WRANGLER = join(ROOT, "node_modules/.bin/wrangler");

/** A failure worth showing the wrangler log for. */
export class LocalWorkerError extends Error {
  constructor(message, showLog = false) {
    super(message);
    this.showLog = showLog;
  }
}

function freePort() {
  return new Promise((ok, ko) => {
    const srv = createServer().once("error", ko);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The local state (D1, R2, Durable Objects) of a startLocalWorker dir: `--persist-to` for other wrangler commands. */
export const localStatePath = (dir) => join(dir, "state");

/**
 * Starts `wrangler dev` with the given vars (`--var KEY:VALUE`; wrangler splits on the first
 * ":" only, so JSON values are fine). Returns { base, dir, logPath, stop, tail, inspectorPort }. `dir` (optional)
 * reuses the state of an earlier run stopped with { keepDir: true } instead of a fresh one.
 * `ports` (optional, [port, inspectorPort]) fixes the ports instead of two free ones. `cwd`,
 * `database` and `healthPath` run another Worker the same way (bench/peer-lists.mjs: a peer
 * project checked out elsewhere, with its own wrangler config, D1 migrations and health route).
 */
export async function startLocalWorker({
  vars,
  label = "mailbot",
  dir: reuseDir,
  ports,
  cwd = ROOT,
  database = "mailbot",
  healthPath = "/health",
}) {
  const dir = reuseDir ?? mkdtempSync(join(tmpdir(), `${label}-`));
  const logPath = join(dir, "wrangler.log");
  const persist = localStatePath(dir);
  // The wrangler bin has `#!/usr/bin/env node`: put this Node (22 under `npm run`) first on PATH.
  // CI=true keeps `d1 migrations apply` from prompting.
  const env = {
    ...process.env,
    PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ""}`,
    CI: "true",
    WRANGLER_SEND_METRICS: "false",
  };
  let child = null;

  const tail = (lines = 60) => {
    try {
      return readFileSync(logPath, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "";
    }
  };

  /** Stops wrangler and its workerd children: spawned detached, it leads its own process group. */
  const stop = ({ keepDir = false } = {}) => {
    const done = () => {
      if (!keepDir) rmSync(dir, { recursive: true, force: true });
    };
    if (!child?.pid || child.exitCode !== null || child.signalCode !== null) return Promise.resolve(done());
    const exited = new Promise((ok) => child.once("exit", ok));
    const pid = child.pid;
    try {
      process.kill(-pid, "SIGTERM");
    } catch {}
    // If SIGTERM is ignored, escalate (unref'd: the child handle keeps us alive meanwhile).
    setTimeout(() => {
      try {
        process.kill(-pid, "SIGKILL");
      } catch {}
    }, 5000).unref();
    return exited.then(done);
  };
  // Whatever way the caller exits, nothing of the group may outlive it.
  process.on("exit", () => {
    if (child?.pid && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {}
    }
  });

  const logFd = openSync(logPath, "a");
  const migrate = spawnSync(WRANGLER, ["d1", "migrations", "apply", database, "--local", "--persist-to", persist], {
    cwd,
    env,
    stdio: ["ignore", logFd, logFd],
    timeout: 120_000,
  });
  if (migrate.status !== 0) {
    closeSync(logFd);
    throw new LocalWorkerError(
      `d1 migrations apply failed (${migrate.error?.message ?? `exit ${migrate.status}`})`,
      true,
    );
  }

  const [port, inspectorPort] = ports ?? [await freePort(), await freePort()];
  const args = ["dev", "--port", String(port), "--ip", "127.0.0.1", "--inspector-port", String(inspectorPort)];
  args.push("--persist-to", persist, ...Object.entries(vars).flatMap(([k, v]) => ["--var", `${k}:${v}`]));
  child = spawn(WRANGLER, args, { cwd, env, stdio: ["ignore", logFd, logFd], detached: true });
  closeSync(logFd);
  let spawnError = null;
  child.on("error", (err) => {
    spawnError = err;
  });

  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (spawnError) throw new LocalWorkerError(`could not start wrangler: ${spawnError.message}`, true);
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new LocalWorkerError(`wrangler dev exited early (${child.exitCode ?? child.signalCode})`, true);
    }
    try {
      const res = await fetch(`${base}${healthPath}`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === 200) return { base, dir, logPath, stop, tail, inspectorPort };
    } catch {}
    await sleep(250);
  }
  throw new LocalWorkerError(`the Worker did not answer GET ${healthPath} with 200 within 60 s`, true);
}
