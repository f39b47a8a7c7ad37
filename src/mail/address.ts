/** An address as given by an MTA or a caller, trimmed, without angle brackets, lower-cased. */
export function bareAddress(address: string): string {
  return address.trim().replace(/^<|>$/g, "").toLowerCase();
}

/**
 * The address an envelope recipient means: lower-cased, with a `+tag` sub-address removed from
 * the local part (`support--k3x9m2+orders@…` and `support+orders--k3x9m2@…` both reach
 * `support--k3x9m2@…`). Usernames cannot contain `+`, so the cut is unambiguous.
 */
export function canonicalRecipient(address: string): { address: string; tag: string | null } {
  const a = bareAddress(address);
  const at = a.lastIndexOf("@");
  if (at <= 0) return { address: a, tag: null };
  const local = a.slice(0, at);
  const domain = a.slice(at + 1);
  const m = /\+([^+]*?)(?=--|$)/.exec(local);
  if (!m) return { address: a, tag: null };
  return { address: `${local.replace(m[0], "")}@${domain}`, tag: m[1] || null };
}

/**
 * The form an outside address is suppressed under: lower-cased whole (most mailbox providers
 * ignore case in the local part, and on a suppression list treating `Bob@` and `bob@` as one
 * errs on the safe side), without a `+tag` sub-address (`bob+news@x` reaches `bob@x`).
 */
export function suppressionAddress(address: string): string {
  const a = bareAddress(address);
  const at = a.lastIndexOf("@");
  if (at <= 0) return a;
  const plus = a.indexOf("+");
  if (plus <= 0 || plus > at) return a;
  return `${a.slice(0, plus)}${a.slice(at)}`;
}

/**
 * C0 control characters (and DEL) other than the tab: never valid in a subject, a display name or
 * a header value. Refused at input; text taken from inbound mail has them replaced by spaces.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
export const CONTROL_CHARS = /[\x00-\x08\x0a-\x1f\x7f]/;

/** Text for a header, with every C0 control (and DEL) turned into a space. */
export function stripControls(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
  return text.replace(/[\x00-\x08\x0a-\x1f\x7f]+/g, " ");
}
