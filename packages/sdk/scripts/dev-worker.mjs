// Starts this repo's Worker under `wrangler dev` (scripts/local-worker.mjs: free port, throwaway
// state) with the .dev.vars.example settings, for the type generator and the SDK tests.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { startLocalWorker } from "../../../scripts/local-worker.mjs";

/** The settings a developer gets from `npm run dev`, with fresh random secrets. */
export function devVars(overrides = {}) {
  const vars = Object.fromEntries(
    readFileSync(new URL("../../../.dev.vars.example", import.meta.url), "utf8")
      .split("\n")
      .filter((line) => /^[A-Z_]+=/.test(line))
      .map((line) => {
        const [k, ...v] = line.split("=");
        return [k, v.join("=") === "__random__" ? randomBytes(24).toString("base64url") : v.join("=")];
      }),
  );
  return { ...vars, ...overrides };
}

/** `{ base, vars, stop, tail, dir }` of a fresh local Worker. */
export async function startDevWorker({ label = "mailbot-sdk", overrides = {} } = {}) {
  const vars = devVars(overrides);
  const worker = await startLocalWorker({ vars, label });
  return { ...worker, vars };
}
