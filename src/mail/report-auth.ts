/**
 * Who vouches for a feedback report: the domains whose DKIM signature on it passed, read from the
 * topmost Authentication-Results written by a trusted receiver (anyone can write that header into
 * a message, so only the configured authserv-ids count, and only the header our receiving layer
 * prepended: the first one).
 */

function list(headers: Record<string, string | string[]>, name: string): string[] {
  const v = Object.hasOwn(headers, name) ? headers[name] : undefined;
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

/** Lower-case `header.d` (or the domain of `header.i`) of each `dkim=pass` in the trusted header. */
export function dkimPassDomains(headers: Record<string, string | string[]>, trusted: string[]): string[] {
  const top = list(headers, "authentication-results")[0];
  if (!top) return [];
  const clean = top.replace(/\([^()]*\)/g, " ");
  const parts = clean.split(";").map((p) => p.trim());
  const authservId = parts[0]?.split(/\s+/)[0]?.toLowerCase();
  if (!authservId || !trusted.includes(authservId)) return [];
  const domains: string[] = [];
  for (const p of parts.slice(1)) {
    if (!/^dkim\s*=\s*pass\b/i.test(p)) continue;
    const d =
      /\bheader\.d\s*=\s*"?([a-z0-9.-]+)/i.exec(p)?.[1] ?? /\bheader\.i\s*=\s*"?[^@\s;]*@([a-z0-9.-]+)/i.exec(p)?.[1];
    if (d) domains.push(d.toLowerCase().replace(/\.$/, ""));
  }
  return domains;
}

/** The configured feedback-loop source a report is DKIM-signed by (the domain or a subdomain of it), or null. */
export function feedbackLoopSource(
  headers: Record<string, string | string[]>,
  trusted: string[],
  sources: string[],
): string | null {
  if (sources.length === 0) return null;
  for (const d of dkimPassDomains(headers, trusted)) {
    const source = sources.find((s) => d === s || d.endsWith(`.${s}`));
    if (source) return source;
  }
  return null;
}
