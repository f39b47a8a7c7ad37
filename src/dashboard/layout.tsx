import type { Child } from "hono/jsx";

/** The navigation: every page is reachable from here. */
const NAV: [string, string][] = [
  ["/dashboard/overview", "Overview"],
  ["/dashboard/inboxes", "Inboxes"],
  ["/dashboard/domains", "Domains"],
  ["/dashboard/webhooks", "Webhooks"],
  ["/dashboard/events", "Events"],
  ["/dashboard/audit", "Audit log"],
  ["/dashboard/keys", "API keys"],
  ["/dashboard/suppressions", "Suppressions"],
];

export interface Viewer {
  kind: "account" | "operator";
  label: string;
}

export function Page(props: { title: string; path: string; viewer: Viewer | null; children?: Child }) {
  const { viewer, path } = props;
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="referrer" content="same-origin" />
        <title>{`${props.title} · mailbot`}</title>
        <link rel="stylesheet" href="/dashboard/assets/app.css" />
        <script src="/dashboard/assets/app.js" defer />
      </head>
      <body>
        {viewer && (
          <nav aria-label="Main">
            <div class="brand">mailbot</div>
            {viewer.kind === "account" &&
              NAV.map(([href, label]) => (
                <a href={href} aria-current={path.startsWith(href) ? "page" : undefined}>
                  {label}
                </a>
              ))}
            {viewer.kind === "operator" && (
              <>
                <div class="section">Operator</div>
                <a
                  href="/dashboard/operator/accounts"
                  aria-current={path.startsWith("/dashboard/operator") ? "page" : undefined}
                >
                  Accounts
                </a>
              </>
            )}
            <div class="foot">
              <div>{viewer.label}</div>
              <form method="post" action="/dashboard/sign-out">
                <button type="submit" class="secondary">
                  Sign out
                </button>
              </form>
            </div>
          </nav>
        )}
        <main id="main">
          <h1>{props.title}</h1>
          {props.children}
        </main>
      </body>
    </html>
  );
}

/** Status as text first, colour second. */
const TONE: Record<string, string> = {
  active: "ok",
  sent: "ok",
  delivered: "ok",
  verified: "ok",
  succeeded: "ok",
  ok: "ok",
  queued: "warn",
  sending: "warn",
  warning: "warn",
  pending: "warn",
  retrying: "warn",
  disabled: "bad",
  bounced: "bad",
  failed: "bad",
  blocked: "bad",
  suspended: "bad",
  revoked: "bad",
};
export function Status(props: { value: string }) {
  return <span class={`st st-${TONE[props.value] ?? "neutral"}`}>{props.value}</span>;
}

export function Id(props: { value: string }) {
  return (
    <span>
      <code class="id">{props.value}</code>
      <button type="button" class="copy secondary" data-copy={props.value} aria-label={`Copy ${props.value}`}>
        copy
      </button>
    </span>
  );
}

/** Relative time in the browser, the exact UTC time on hover (and without script). */
export function When(props: { at: string | null }) {
  if (!props.at) return <span class="muted">never</span>;
  return <time datetime={props.at}>{props.at.replace("T", " ").replace(/\.\d+Z$/, " UTC")}</time>;
}

export function Empty(props: { children?: Child }) {
  return <div class="empty">{props.children}</div>;
}

/** The API's error envelope, in words: code, message and details (signals, records, limits). */
export function ErrorBox(props: { error: { code: string; message: string; details?: unknown } | null }) {
  const e = props.error;
  if (!e) return null;
  const details = e.details as Record<string, unknown> | Array<{ path: string; message: string }> | undefined;
  return (
    <div class="box error" role="alert">
      <strong>
        Refused: <code>{e.code}</code>
      </strong>
      <p>{e.message}</p>
      {Array.isArray(details) && (
        <ul>
          {details.map((d) => (
            <li>
              <code>{d.path}</code>: {d.message}
            </li>
          ))}
        </ul>
      )}
      {details && !Array.isArray(details) && <Details value={details} />}
    </div>
  );
}

function Details(props: { value: Record<string, unknown> }) {
  const signals = props.value.signals as { name: string; weight: number; evidence?: string }[] | undefined;
  const rest = Object.entries(props.value).filter(([k]) => k !== "signals");
  return (
    <>
      {signals && signals.length > 0 && (
        <>
          <p>Signals that blocked it:</p>
          <ul class="signals">
            {signals.map((s) => (
              <li>
                <code>{s.name}</code> (weight {s.weight}){s.evidence ? `: ${s.evidence}` : ""}
              </li>
            ))}
          </ul>
        </>
      )}
      {rest.length > 0 && (
        <dl class="kv">
          {rest.map(([k, v]) => (
            <>
              <dt>{k}</dt>
              <dd>
                <code>{typeof v === "string" ? v : JSON.stringify(v)}</code>
              </dd>
            </>
          ))}
        </dl>
      )}
    </>
  );
}

/** A rate against its threshold: the warning mark at 2/3, the threshold at the end. */
export function RateBar(props: { label: string; count: number; of: number; rate: number; threshold: number }) {
  const frac = Math.min(1, props.threshold > 0 ? props.rate / props.threshold : 0);
  return (
    <div>
      <div>
        {props.label}: {props.count} of {props.of}, {(props.rate * 100).toFixed(1)} %; disabled above{" "}
        {(props.threshold * 100).toFixed(1)} %
      </div>
      <svg
        class="bar"
        width="240"
        height="12"
        role="img"
        aria-label={`${props.label} ${Math.round(frac * 100)}% of the threshold`}
      >
        <rect class="track" x="0" y="0" width="240" height="12" />
        <rect class="fill" x="0" y="0" width={String(Math.round(240 * frac))} height="12" />
        <line x1="160" y1="0" x2="160" y2="12" />
      </svg>
    </div>
  );
}

export function NextLink(props: { base: string; cursor: string | null }) {
  if (!props.cursor) return null;
  const sep = props.base.includes("?") ? "&" : "?";
  return (
    <p>
      <a href={`${props.base}${sep}cursor=${encodeURIComponent(props.cursor)}`}>Next →</a>
    </p>
  );
}
