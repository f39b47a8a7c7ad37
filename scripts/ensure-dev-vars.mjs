// Creates .dev.vars from .dev.vars.example on first `npm run dev`, replacing each
// __random__ with a fresh secret, so a new clone runs with no manual setup.

import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";

if (!existsSync(".dev.vars")) {
  const text = readFileSync(".dev.vars.example", "utf8").replace(/__random__/g, () =>
    randomBytes(24).toString("base64url"),
  );
  writeFileSync(".dev.vars", text, { mode: 0o600 });
  const admin = text.match(/^ADMIN_TOKEN=(.*)$/m)?.[1];
  console.log(`Created .dev.vars (local settings). Your local ADMIN_TOKEN is: ${admin}`);
}
