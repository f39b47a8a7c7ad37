import { partialConfig } from "../../config";
import type { Bindings } from "../../env";
import type { Resolver } from "../../lib/dns";

/**
 * The SSRF guard for webhook URLs. A URL is checked twice: when it is saved (syntax + DNS) and
 * again before every delivery (DNS can change after the check). Deliveries also refuse
 * redirects, so a public URL cannot bounce a request inward.
 */

export type UrlVerdict = { ok: true; url: URL } | { ok: false; reason: string };

const MAX_URL_LENGTH = 2048;

/** Names that are internal by definition, whatever DNS says. */
const BLOCKED_NAMES = new Set(["localhost", "metadata", "metadata.google.internal", "instance-data", "ip6-localhost"]);
const BLOCKED_SUFFIXES = [".localhost", ".internal", ".local", ".localdomain", ".home.arpa", ".intranet", ".lan"];

/** Local development may target these two hosts over plain http (WEBHOOK_ALLOW_LOCAL). */
const LOCAL_HOSTS = new Set(["localhost", "127.0.0.1"]);

/** Whether this deployment lets webhooks reach http://localhost and http://127.0.0.1 (never in production). */
export function allowLocalWebhooks(env: Pick<Bindings, "ENVIRONMENT" | "WEBHOOK_ALLOW_LOCAL">): boolean {
  return partialConfig(env).webhookAllowLocal;
}

/** The host exactly as the user typed it (before the URL parser turns `2130706433` into `127.0.0.1`). */
function typedHost(raw: string): string | null {
  const authority = /^[a-z][a-z0-9+.-]*:\/\/([^/?#\\]*)/i.exec(raw.trim())?.[1];
  if (authority === undefined || authority.includes("@")) return null;
  return authority.replace(/:\d*$/, "").toLowerCase();
}

/** Syntax and literal-address checks (no DNS). `local: true` means an allowed local-development target. */
export function checkUrlSyntax(raw: string, allowLocal: boolean): UrlVerdict & { local?: boolean } {
  if (raw.length > MAX_URL_LENGTH) return { ok: false, reason: `The URL is longer than ${MAX_URL_LENGTH} characters.` };
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    return { ok: false, reason: "The URL is not a valid absolute URL." };
  }
  if (url.username || url.password) return { ok: false, reason: "The URL must not contain a user name or password." };
  if (allowLocal) {
    const typed = typedHost(raw);
    if (typed && LOCAL_HOSTS.has(typed) && (url.protocol === "http:" || url.protocol === "https:")) {
      return { ok: true, url, local: true };
    }
  }
  if (url.protocol !== "https:") return { ok: false, reason: "The URL must use https." };
  const host = url.hostname.toLowerCase().replace(/\.$/, "");
  if (host.startsWith("[")) {
    const ip = host.slice(1, -1);
    return isPublicIpv6(ip) ? { ok: true, url } : { ok: false, reason: `The address ${ip} is not a public address.` };
  }
  // The URL parser has already turned decimal, hex, octal and short IPv4 forms into dotted quads.
  if (parseIpv4(host)) {
    return isPublicIpv4(host)
      ? { ok: true, url }
      : { ok: false, reason: `The address ${host} is not a public address.` };
  }
  if (BLOCKED_NAMES.has(host) || BLOCKED_SUFFIXES.some((s) => host.endsWith(s))) {
    return { ok: false, reason: `The host ${host} is an internal name.` };
  }
  if (!host.includes(".")) return { ok: false, reason: `The host ${host} is not a public domain name.` };
  return { ok: true, url };
}

/**
 * The full check: syntax, then every A and AAAA record of the host must be a public address.
 * A temporary DNS failure refuses too (the caller may try again).
 */
export async function checkWebhookUrl(
  raw: string,
  options: { allowLocal: boolean; resolver: Resolver; fresh?: boolean },
): Promise<UrlVerdict> {
  const syntax = checkUrlSyntax(raw, options.allowLocal);
  if (!syntax.ok || syntax.local) return syntax;
  const host = syntax.url.hostname.toLowerCase().replace(/\.$/, "");
  if (host.startsWith("[") || parseIpv4(host)) return syntax;
  const lookup = options.fresh ? { fresh: true } : undefined;
  const answers = await Promise.all([
    options.resolver.resolve(host, "A", lookup),
    options.resolver.resolve(host, "AAAA", lookup),
  ]);
  const addresses = answers.flatMap((a) => (a.status === "ok" ? a.records : []));
  const bad = addresses.find((ip) => !(ip.includes(":") ? isPublicIpv6(ip) : isPublicIpv4(ip)));
  if (bad) return { ok: false, reason: `The host ${host} resolves to ${bad}, which is not a public address.` };
  if (addresses.length > 0) return syntax;
  const failure = answers.find((a) => a.status === "temporary_failure");
  if (failure) return { ok: false, reason: `The host ${host} could not be resolved right now; try again.` };
  return { ok: false, reason: `The host ${host} does not resolve to any address.` };
}

/** Dotted-quad IPv4 to its four octets, or null. */
export function parseIpv4(text: string): number[] | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!m) return null;
  const octets = m.slice(1).map(Number);
  return octets.every((o) => o <= 255) ? octets : null;
}

/** Not private, loopback, link-local, CGNAT, multicast, reserved or documentation space. */
export function isPublicIpv4(text: string): boolean {
  const o = parseIpv4(text);
  if (!o) return false;
  const [a = 0, b = 0, c = 0] = o;
  if (a === 0 || a === 10 || a === 127) return false; // "this network", private, loopback
  if (a === 100 && b >= 64 && b <= 127) return false; // CGNAT 100.64/10
  if (a === 169 && b === 254) return false; // link-local, cloud metadata
  if (a === 172 && b >= 16 && b <= 31) return false; // private 172.16/12
  if (a === 192 && b === 168) return false; // private
  if (a === 192 && b === 0 && (c === 0 || c === 2)) return false; // IETF protocol, TEST-NET-1
  if (a === 192 && b === 88 && c === 99) return false; // 6to4 relay anycast
  if (a === 198 && (b === 18 || b === 19)) return false; // benchmarking
  if (a === 198 && b === 51 && c === 100) return false; // TEST-NET-2
  if (a === 203 && b === 0 && c === 113) return false; // TEST-NET-3
  if (a >= 224) return false; // multicast 224/4, reserved 240/4, broadcast
  return true;
}

/** IPv6 text (no brackets) to eight 16-bit groups, or null. Accepts an embedded dotted IPv4 tail. */
export function parseIpv6(text: string): number[] | null {
  let s = text.toLowerCase();
  const zone = s.indexOf("%");
  if (zone >= 0) s = s.slice(0, zone);
  let tail: number[] = [];
  const v4 = /(\d{1,3}(?:\.\d{1,3}){3})$/.exec(s);
  if (v4?.[1]) {
    const o = parseIpv4(v4[1]);
    if (!o) return null;
    tail = [((o[0] ?? 0) << 8) | (o[1] ?? 0), ((o[2] ?? 0) << 8) | (o[3] ?? 0)];
    s = s.slice(0, -v4[1].length);
    if (s.endsWith(":") && !s.endsWith("::")) s = s.slice(0, -1);
  }
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const part = (p: string | undefined) => (p ? p.split(":") : []);
  const head = part(halves[0]);
  const rest = part(halves[1]);
  const groups = [...head, ...rest];
  if (!groups.every((g) => /^[0-9a-f]{1,4}$/.test(g))) return null;
  const given = groups.length + tail.length;
  if (halves.length === 1 && given !== 8) return null;
  if (halves.length === 2 && given > 7) return null;
  const zeros = new Array(8 - given).fill(0);
  const all = [
    ...head.map((g) => Number.parseInt(g, 16)),
    ...(halves.length === 2 ? zeros : []),
    ...rest.map((g) => Number.parseInt(g, 16)),
    ...tail,
  ];
  return all.length === 8 ? all : null;
}

const v4Of = (hi: number, lo: number) => `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;

/** Global unicast only, and any IPv4 embedded in it must itself be public. */
export function isPublicIpv6(text: string): boolean {
  const g = parseIpv6(text);
  if (!g) return false;
  const [g0 = 0, g1 = 0, g2 = 0, g3 = 0, g4 = 0, g5 = 0, g6 = 0, g7 = 0] = g;
  // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible), 64:ff9b::a.b.c.d (NAT64): judge the IPv4.
  if (g0 === 0 && g1 === 0 && g2 === 0 && g3 === 0 && g4 === 0 && (g5 === 0xffff || g5 === 0)) {
    if (g5 === 0 && g6 === 0) return false; // :: and ::1
    return isPublicIpv4(v4Of(g6, g7));
  }
  if (g0 === 0x64 && g1 === 0xff9b) return isPublicIpv4(v4Of(g6, g7));
  if ((g0 & 0xe000) !== 0x2000) return false; // outside 2000::/3: ULA fc00::/7, link-local, multicast, reserved
  if (g0 === 0x2001 && g1 === 0x0db8) return false; // documentation
  if (g0 === 0x2001 && g1 < 0x200) return false; // 2001::/23 IETF special purpose (Teredo, ORCHID…)
  if (g0 === 0x2002) return isPublicIpv4(v4Of(g1, g2)); // 6to4 embeds an IPv4
  return true;
}
