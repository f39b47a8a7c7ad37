import { type Context, Hono } from "hono";
import { config } from "../config";
import { AdminAccountPatch } from "../features/accounts/accounts.schemas";
import {
  adminPatchAccount,
  adminViewAccount,
  getAccount,
  listAllAccounts,
  toAccountWire,
} from "../features/accounts/accounts.service";
import { SCOPES } from "../features/api-keys/api-keys.schemas";
import { createKey, listKeys, revokeKey, toKeyWire } from "../features/api-keys/api-keys.service";
import { auditFilters, listAudit, toAuditWire, verifyAudit } from "../features/audit/audit.service";
import { EVENT_TYPES } from "../features/events/events.schemas";
import { eventsAfter, listEvents, openEventStream, toEventWire } from "../features/events/events.service";
import { CreateInboxInput } from "../features/inboxes/inboxes.schemas";
import {
  adminEnableInbox,
  createInbox,
  deactivateInbox,
  enableInbox,
  getInbox,
  listInboxes,
  toInboxWire,
} from "../features/inboxes/inboxes.service";
import { PatchMessageInput } from "../features/messages/messages.schemas";
import {
  getAttachment,
  getMessage,
  getRaw,
  listMessages,
  patchMessage,
  searchMessages,
  toMessageListWire,
  toMessageWire,
  withBodies,
} from "../features/messages/messages.service";
import { ForwardInput, ReplyToMessageInput, SendMessageInput } from "../features/outbound/outbound.schemas";
import { forwardMessage, replyToMessage, sendMessage } from "../features/outbound/outbound.service";
import { getReputation } from "../features/reputation/reputation.service";
import { CreateDomainInput } from "../features/sender-auth/domains.schemas";
import { addDomain, getDomain, listDomains, toDomainWire, verifyDomain } from "../features/sender-auth/domains.service";
import { deleteSuppression, listSuppressions, toSuppressionWire } from "../features/suppressions/suppressions.service";
import { getThread, toThreadWithMessagesWire } from "../features/threads/threads.service";
import { getDailyUsage } from "../features/usage/usage.service";
import { CreateWebhookInput } from "../features/webhooks/webhooks.schemas";
import {
  createWebhook,
  getWebhook,
  listDeliveries,
  listWebhooks,
  replayEvent,
  sendTestEvent,
  toDeliveryWire,
  toWebhookWire,
} from "../features/webhooks/webhooks.service";
import type { AppEnv } from "../http/app-env";
import { requireFullAccess, requireScope, type Scope } from "../http/auth";
import { contextFor, requestContext, serviceContext } from "../http/context";
import { errorBody, HTTP_STATUS, toAppError } from "../http/errors";
import { Forbidden, Unauthorized } from "../lib/errors";
import { pageOf, toPage } from "../lib/pagination";
import { tierLimits } from "../lib/tiers";
import { CSS, JS } from "./assets";
import { Empty, ErrorBox, Id, NextLink, Page, RateBar, Status, type Viewer, When } from "./layout";
import { type DashEnv, loadSession, sameOrigin, signInAsOperator, signInWithKey, signOut } from "./session";

type C = Context<DashEnv>;
/** An account row as the accounts service returns it (adapters do not import the schema). */
type AccountRow = Awaited<ReturnType<typeof getAccount>>;
type Err = { code: string; message: string; details?: unknown } | null;

/** The pages' policy: our script and stylesheet only, frames only from us, forms only to us. */
const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/** The route helpers of src/http take the API's context type; a dashboard context is one. */
const api = (c: C) => c as unknown as Context<AppEnv>;
const scope = (c: C, s: Scope) => requireScope(api(c), s);
const ctxOf = (c: C) => serviceContext(api(c));

function viewer(c: C): Viewer | null {
  const s = c.get("session");
  if (!s) return null;
  return s.kind === "operator"
    ? { kind: "operator", label: "Operator" }
    : { kind: "account", label: `${s.account.email} · key ${s.key.name}` };
}

function render(c: C, title: string, body: unknown, status = 200) {
  return c.html(
    <Page title={title} path={c.req.path} viewer={viewer(c)}>
      {body as never}
    </Page>,
    status as 200,
  );
}

/** Runs a service call; an AppError becomes the API's error body, shown on the page. */
async function attempt<T>(
  c: C,
  fn: () => Promise<T>,
): Promise<{ ok: true; value: T } | { ok: false; error: Err; status: number }> {
  try {
    return { ok: true, value: await fn() };
  } catch (err) {
    const e = toAppError(err, c.get("requestId"));
    return { ok: false, error: errorBody(e, c.get("requestId")), status: HTTP_STATUS[e.kind] };
  }
}

async function form(c: C): Promise<Record<string, string>> {
  const body = await c.req.parseBody();
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(body)) if (typeof v === "string") out[k] = v;
  return out;
}
const list = (v: string | undefined) =>
  (v ?? "")
    .split(/[,\n]/)
    .map((s) => s.trim())
    .filter(Boolean);
const opt = (v: string | undefined) => (v && v.trim() !== "" ? v : undefined);

export const dashboardRoutes = new Hono<DashEnv>();

dashboardRoutes.use("*", async (c, next) => {
  await next();
  const h = c.res.headers;
  if (!h.has("Content-Security-Policy")) h.set("Content-Security-Policy", PAGE_CSP);
  if (!h.has("X-Frame-Options")) h.set("X-Frame-Options", "DENY");
  if (!h.has("Referrer-Policy")) h.set("Referrer-Policy", "same-origin");
  if (!h.has("X-Content-Type-Options")) h.set("X-Content-Type-Options", "nosniff");
  // no-transform on a stream: a proxy that compresses or buffers would hold events back.
  h.set(
    "Cache-Control",
    h.get("Content-Type")?.startsWith("text/event-stream") ? "no-store, no-transform" : "no-store",
  );
});
dashboardRoutes.get("/assets/app.css", (c) =>
  c.body(CSS, 200, { "Content-Type": "text/css; charset=utf-8", "Cache-Control": "public, max-age=3600" }),
);
dashboardRoutes.get("/assets/app.js", (c) =>
  c.body(JS, 200, { "Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "public, max-age=3600" }),
);

// CSRF before anything reads the cookie: a cross-site POST never reaches a handler.
dashboardRoutes.use("*", async (c, next) => {
  if (c.req.method !== "GET" && c.req.method !== "HEAD" && !sameOrigin(c)) {
    throw new Forbidden("cross_site_request", "This request did not come from a dashboard page and was refused.");
  }
  await next();
});
dashboardRoutes.use("*", loadSession);
dashboardRoutes.use("*", async (c, next) => {
  const path = c.req.path.replace(/^\/dashboard/, "") || "/";
  if (path === "/sign-in" || path === "/sign-out") return next();
  const s = c.get("session");
  if (!s) {
    if (c.req.method === "GET") return c.redirect("/dashboard/sign-in", 303);
    throw new Unauthorized("Your dashboard session has ended. Sign in again.", "session_expired");
  }
  const operatorPath = path.startsWith("/operator");
  if (operatorPath !== (s.kind === "operator")) {
    if (c.req.method === "GET")
      return c.redirect(s.kind === "operator" ? "/dashboard/operator/accounts" : "/dashboard/overview", 303);
    throw new Forbidden("forbidden", "This page is not available to this session.");
  }
  await next();
});

dashboardRoutes.onError((err, c) => {
  const e = toAppError(err, c.get("requestId"));
  const status = HTTP_STATUS[e.kind];
  if (c.req.header("Accept")?.includes("application/json"))
    return c.json({ error: errorBody(e, c.get("requestId")) }, status);
  return render(
    c as C,
    status === 404 ? "Not found" : "Something was refused",
    <ErrorBox error={errorBody(e, c.get("requestId"))} />,
    status,
  );
});

// ---------------------------------------------------------------- sign-in, sign-out
function SignIn(props: { error: Err }) {
  return (
    <>
      <ErrorBox error={props.error} />
      <form method="post" action="/dashboard/sign-in" class="narrow box">
        <input type="hidden" name="kind" value="key" />
        <label>
          API key
          <input name="secret" type="password" autocomplete="off" required placeholder="mb_…" />
        </label>
        <p class="muted">
          The key is exchanged for a session and never kept in the browser. The session has the key's scopes and inbox
          restriction, and ends when you sign out or after 12 hours.
        </p>
        <button type="submit">Sign in</button>
      </form>
      <form method="post" action="/dashboard/sign-in" class="narrow box">
        <input type="hidden" name="kind" value="operator" />
        <label>
          Operator token (ADMIN_TOKEN)
          <input name="secret" type="password" autocomplete="off" required />
        </label>
        <button type="submit" class="secondary">
          Sign in as operator
        </button>
      </form>
    </>
  );
}
dashboardRoutes.get("/", (c) => c.redirect(c.get("session") ? "/dashboard/overview" : "/dashboard/sign-in", 303));
dashboardRoutes.get("/sign-in", (c) => render(c, "Sign in", <SignIn error={null} />));
dashboardRoutes.post("/sign-in", async (c) => {
  const f = await form(c);
  const r = await attempt(c, () =>
    f.kind === "operator" ? signInAsOperator(c, f.secret ?? "") : signInWithKey(c, f.secret ?? ""),
  );
  if (!r.ok) return render(c, "Sign in", <SignIn error={r.error} />, r.status);
  return c.redirect(f.kind === "operator" ? "/dashboard/operator/accounts" : "/dashboard/overview", 303);
});
dashboardRoutes.post("/sign-out", async (c) => {
  await signOut(c);
  return c.redirect("/dashboard/sign-in", 303);
});

// ---------------------------------------------------------------- overview
dashboardRoutes.get("/overview", async (c) => {
  scope(c, "read");
  const ctx = ctxOf(c);
  const [account, inboxes, days] = await Promise.all([
    getAccount(ctx),
    listInboxes(ctx, { limit: 100 }),
    getDailyUsage(ctx, 14),
  ]);
  const a = toAccountWire(account, c.env, ctx.now());
  const reps = await Promise.all(inboxes.map((i) => getReputation(ctx, i.id).catch(() => null)));
  const flagged = inboxes
    .map((i, n) => ({ inbox: toInboxWire(i), rep: reps[n] }))
    .filter((x) => x.rep && x.rep.status !== "ok");
  const max = Math.max(1, ...days.map((d) => Math.max(d.sent, d.received, d.bounced)));
  const nl = a.limits.new_account_send_limit;
  return render(
    c,
    "Overview",
    <>
      <div class="grid">
        <div class="box">
          <div class="muted">Account</div>
          <div>{a.email}</div>
          <Id value={a.id} />
          <div>
            tier <code>{a.tier}</code> · <Status value={a.status} />
          </div>
        </div>
        <div class="box">
          <div class="muted">New-account send limit</div>
          {nl.active ? (
            <div>
              {nl.limit} recipients per {nl.window_hours} h until <When at={a.new_account_until} />
            </div>
          ) : (
            <div>Lifted: the tier's limits apply ({a.limits.sends_per_inbox_per_day} sends per inbox per day).</div>
          )}
        </div>
        <div class="box">
          <div class="muted">Inboxes</div>
          <div>
            {inboxes.length} of {a.limits.max_inboxes}
          </div>
        </div>
      </div>
      <h2>Last 14 days</h2>
      <svg width="560" height="130" role="img" aria-label="Sent, received and bounced per day">
        {days
          .slice()
          .reverse()
          .map((d, i) => (
            <g>
              <title>{`${d.date}: ${d.sent} sent, ${d.received} received, ${d.bounced} bounced`}</title>
              <rect
                x={String(i * 40)}
                y={String(110 - (100 * d.sent) / max)}
                width="12"
                height={String((100 * d.sent) / max)}
                fill="#1f5fbf"
              />
              <rect
                x={String(i * 40 + 13)}
                y={String(110 - (100 * d.received) / max)}
                width="12"
                height={String((100 * d.received) / max)}
                fill="#5b6470"
              />
              <rect
                x={String(i * 40 + 26)}
                y={String(110 - (100 * d.bounced) / max)}
                width="8"
                height={String((100 * d.bounced) / max)}
                fill="#b3261e"
              />
              <text x={String(i * 40)} y="125" font-size="9">
                {d.date.slice(5)}
              </text>
            </g>
          ))}
      </svg>
      <p class="muted">Blue: sent · grey: received · red: bounced.</p>
      <h2>Inboxes with warnings</h2>
      {flagged.length === 0 ? (
        <Empty>No inbox has a reputation warning.</Empty>
      ) : (
        <ul>
          {flagged.map((x) => (
            <li>
              <a href={`/dashboard/inboxes/${x.inbox.id}`}>{x.inbox.address}</a> <Status value={x.rep?.status ?? ""} />{" "}
              {x.rep?.warnings.join(", ")} {x.rep?.disabled_reason}
            </li>
          ))}
        </ul>
      )}
    </>,
  );
});

// ---------------------------------------------------------------- inboxes
async function inboxesPage(c: C, error: Err, status = 200) {
  scope(c, "read");
  const ctx = ctxOf(c);
  const { items, nextCursor } = pageOf(
    await listInboxes(ctx, toPage({ limit: 50, cursor: c.req.query("cursor") })),
    50,
  );
  return render(
    c,
    "Inboxes",
    <>
      <ErrorBox error={error} />
      <form method="post" action="/dashboard/inboxes" class="row">
        <label>
          Username
          <input name="username" required pattern="[a-z0-9._\-]{1,64}" />
        </label>
        <label>
          Domain (optional)
          <input name="domain" />
        </label>
        <label>
          Display name
          <input name="display_name" />
        </label>
        <button type="submit">Create inbox</button>
      </form>
      {items.length === 0 ? (
        <Empty>No inboxes yet. Create one above; it can receive mail at once.</Empty>
      ) : (
        <table>
          <thead>
            <tr>
              <th>Address</th>
              <th>Status</th>
              <th>Id</th>
              <th>Created</th>
            </tr>
          </thead>
          <tbody>
            {items.map(toInboxWire).map((i) => (
              <tr>
                <td>
                  <a href={`/dashboard/inboxes/${i.id}`}>{i.address}</a>
                </td>
                <td>
                  <Status value={i.status} />
                </td>
                <td>
                  <Id value={i.id} />
                </td>
                <td>
                  <When at={i.created_at} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <NextLink base="/dashboard/inboxes" cursor={nextCursor} />
    </>,
    status,
  );
}
dashboardRoutes.get("/inboxes", (c) => inboxesPage(c, null));
dashboardRoutes.post("/inboxes", async (c) => {
  const f = await form(c);
  const r = await attempt(c, async () => {
    const auth = scope(c, "manage");
    const input = CreateInboxInput.parse({
      username: f.username,
      domain: opt(f.domain),
      display_name: opt(f.display_name),
    });
    return createInbox(ctxOf(c), auth.account, input);
  });
  if (!r.ok) return inboxesPage(c, r.error, r.status);
  return c.redirect(`/dashboard/inboxes/${r.value.id}`, 303);
});
dashboardRoutes.post("/inboxes/:id/:action{deactivate|enable}", async (c) => {
  scope(c, "manage");
  const id = c.req.param("id");
  if (c.req.param("action") === "deactivate") await deactivateInbox(ctxOf(c), id);
  else await enableInbox(ctxOf(c), id);
  return c.redirect(`/dashboard/inboxes/${id}`, 303);
});

dashboardRoutes.get("/inboxes/:id", async (c) => {
  scope(c, "read");
  const ctx = ctxOf(c);
  const id = c.req.param("id");
  const q = c.req.query();
  const inbox = toInboxWire(await getInbox(ctx, id));
  const rep = await getReputation(ctx, id);
  const page = toPage({ limit: 50, cursor: q.cursor });
  const rows = q.q
    ? await searchMessages(ctx, id, q.q, page)
    : await listMessages(
        ctx,
        id,
        {
          direction: q.direction === "inbound" || q.direction === "outbound" ? q.direction : undefined,
          label: opt(q.label),
          sinceMs: q.since ? Date.parse(q.since) || undefined : undefined,
        },
        page,
      );
  const { items, nextCursor } = pageOf(rows, 50);
  const isDev = config(c.env).isDevelopment;
  const query = new URLSearchParams(Object.entries(q).filter(([k, v]) => k !== "cursor" && v)).toString();
  return render(
    c,
    inbox.address,
    <>
      <p>
        <Id value={inbox.id} /> · <Status value={inbox.status} /> ·{" "}
        <a href={`/dashboard/inboxes/${id}/compose`}>Compose</a>
      </p>
      <div class="box">
        <strong>Reputation</strong> (last {rep.window_days} days): <Status value={rep.status} />
        {rep.disabled_reason && (
          <span>
            {" "}
            · disabled: <code>{rep.disabled_reason}</code>
          </span>
        )}
        {rep.warnings.length > 0 && (
          <span>
            {" "}
            ·{" "}
            {rep.warnings.map((w) => (
              <code>{w} </code>
            ))}
          </span>
        )}
        <RateBar
          label="Bounces"
          count={rep.bounced}
          of={rep.sent}
          rate={rep.bounce_rate}
          threshold={rep.thresholds.bounce_rate}
        />
        <RateBar
          label="Complaints"
          count={rep.complained}
          of={rep.sent}
          rate={rep.complaint_rate}
          threshold={rep.thresholds.complaint_rate}
        />
        <form
          method="post"
          action={`/dashboard/inboxes/${id}/${inbox.status === "active" ? "deactivate" : "enable"}`}
          class="row"
        >
          <button type="submit" class={inbox.status === "active" ? "danger" : "secondary"}>
            {inbox.status === "active" ? "Deactivate" : "Enable"}
          </button>
        </form>
      </div>
      <form method="get" action={`/dashboard/inboxes/${id}`} class="row">
        <label>
          Search
          <input name="q" value={q.q ?? ""} type="search" />
        </label>
        <label>
          Direction
          <select name="direction">
            <option value="">any</option>
            <option value="inbound" selected={q.direction === "inbound"}>
              inbound
            </option>
            <option value="outbound" selected={q.direction === "outbound"}>
              outbound
            </option>
          </select>
        </label>
        <label>
          Label
          <input name="label" value={q.label ?? ""} />
        </label>
        <label>
          Since
          <input name="since" type="date" value={q.since ?? ""} />
        </label>
        <button type="submit" class="secondary">
          Filter
        </button>
      </form>
      {items.length === 0 ? (
        <Empty>
          No messages here{query ? " match these filters" : " yet"}. Send mail to <code>{inbox.address}</code>
          <button type="button" class="copy secondary" data-copy={inbox.address}>
            copy
          </button>
          {isDev && (
            <span>
              {" "}
              or, locally, run <code>npm run mail:receive -- --to {inbox.address} --file message.eml</code>
            </span>
          )}
          .
        </Empty>
      ) : (
        <table>
          <thead>
            <tr>
              <th>Subject</th>
              <th>From / to</th>
              <th>Status</th>
              <th>Labels</th>
              <th>When</th>
            </tr>
          </thead>
          <tbody>
            {items.map(toMessageListWire).map((m) => (
              <tr>
                <td>
                  <a href={`/dashboard/inboxes/${id}/messages/${m.id}`}>{m.subject || "(no subject)"}</a>{" "}
                  <a class="muted" href={`/dashboard/inboxes/${id}/threads/${m.thread_id}`}>
                    thread
                  </a>
                </td>
                <td>{m.direction === "inbound" ? m.from_address : `→ ${m.to.join(", ")}`}</td>
                <td>
                  <Status value={m.status} />
                </td>
                <td>{m.labels.join(", ")}</td>
                <td>
                  <When at={m.created_at} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <NextLink base={`/dashboard/inboxes/${id}${query ? `?${query}` : ""}`} cursor={nextCursor} />
    </>,
  );
});

dashboardRoutes.get("/inboxes/:id/threads/:tid", async (c) => {
  scope(c, "read");
  const id = c.req.param("id");
  const t = toThreadWithMessagesWire(await getThread(ctxOf(c), id, c.req.param("tid")));
  return render(
    c,
    t.subject || "(no subject)",
    <>
      <p>
        Thread <Id value={t.id} /> in <a href={`/dashboard/inboxes/${id}`}>the inbox</a>
      </p>
      <ol class="timeline">
        {t.messages.map((m) => (
          <li class={m.direction}>
            <div>
              <strong>{m.direction === "inbound" ? m.from_address : "sent"}</strong> <Status value={m.status} />{" "}
              <When at={m.created_at} /> · <a href={`/dashboard/inboxes/${id}/messages/${m.id}`}>open</a>
            </div>
            <div class="muted">{m.preview}</div>
          </li>
        ))}
      </ol>
    </>,
  );
});

// ---------------------------------------------------------------- one message
async function messagePage(c: C, error: Err, status = 200) {
  scope(c, "read");
  const ctx = ctxOf(c);
  const id = c.req.param("id") as string;
  const mid = c.req.param("mid") as string;
  const m = toMessageWire(await withBodies(ctx, await getMessage(ctx, id, mid)));
  const base = `/dashboard/inboxes/${id}/messages/${mid}`;
  // Plain text first when both exist; HTML only in the sandboxed frame, and only when asked.
  const wantHtml = c.req.query("view") === "html" || (!m.body_text && m.body_html);
  const remote = c.req.query("remote") === "1";
  const a = m.authentication;
  return render(
    c,
    m.subject || "(no subject)",
    <>
      <ErrorBox error={error} />
      <dl class="kv">
        <dt>Id</dt>
        <dd>
          <Id value={m.id} />
        </dd>
        <dt>Direction</dt>
        <dd>
          {m.direction} · <Status value={m.status} />
        </dd>
        <dt>From</dt>
        <dd>{m.from_name ? `${m.from_name} <${m.from_address}>` : m.from_address}</dd>
        <dt>To</dt>
        <dd>{m.to.join(", ")}</dd>
        {m.cc.length > 0 && (
          <>
            <dt>Cc</dt>
            <dd>{m.cc.join(", ")}</dd>
          </>
        )}
        <dt>Thread</dt>
        <dd>
          <a href={`/dashboard/inboxes/${id}/threads/${m.thread_id}`}>{m.thread_id}</a>
        </dd>
        <dt>Authentication</dt>
        <dd>
          {a ? (
            <span>
              SPF <Status value={a.spf ?? "none"} /> · DKIM <Status value={a.dkim ?? "none"} /> · DMARC{" "}
              <Status value={a.dmarc ?? "none"} /> <span class="muted">({a.authserv_id})</span>
            </span>
          ) : (
            <span class="muted">not checked</span>
          )}
        </dd>
        {m.auto_submitted && (
          <>
            <dt>Automatic</dt>
            <dd>{m.auto_submitted_reason ?? "yes"}: do not answer automatically</dd>
          </>
        )}
        {m.error && (
          <>
            <dt>Error</dt>
            <dd>
              <code>{m.error}</code>
            </dd>
          </>
        )}
        <dt>Received</dt>
        <dd>
          <When at={m.created_at} />
        </dd>
        <dt>Raw</dt>
        <dd>
          <a href={`${base}/raw`}>Download .eml</a> ({m.size} bytes)
        </dd>
      </dl>
      <h2>Body</h2>
      {m.body_text && m.body_html && (
        <p>{wantHtml ? <a href={base}>Show plain text</a> : <a href={`${base}?view=html`}>Show HTML (sandboxed)</a>}</p>
      )}
      {wantHtml && m.body_html ? (
        <>
          <p class="muted">
            HTML from the sender runs in a sandbox: no scripts, no forms, no navigation.{" "}
            {remote ? (
              <span>Remote images and styles are loaded.</span>
            ) : (
              <span>
                Remote images and styles are blocked. <a href={`${base}?view=html&remote=1`}>Load remote content</a>
              </span>
            )}
          </p>
          <iframe
            class="mail"
            title="Message HTML (sandboxed)"
            sandbox="allow-popups allow-popups-to-escape-sandbox"
            referrerpolicy="no-referrer"
            src={`${base}/html${remote ? "?remote=1" : ""}`}
          />
        </>
      ) : (
        <pre class="text">{m.body_text ?? "(no text part)"}</pre>
      )}
      <h2>Attachments</h2>
      {m.attachments.length === 0 ? (
        <Empty>No attachments.</Empty>
      ) : (
        <ul>
          {m.attachments.map((att) => (
            <li>
              <a href={`${base}/attachments/${att.id}`}>{att.filename ?? att.id}</a>{" "}
              <span class="muted">
                {att.content_type}, {att.size} bytes
              </span>
            </li>
          ))}
        </ul>
      )}
      <h2>Labels</h2>
      <form method="post" action={`${base}/labels`} class="row">
        <label>
          Labels (comma-separated)
          <input name="labels" value={m.labels.join(", ")} />
        </label>
        <button type="submit" class="secondary">
          Save labels
        </button>
      </form>
      <h2>Reply</h2>
      <form method="post" action={`${base}/reply`} class="narrow">
        <label>
          Your reply
          <textarea name="body_text" required />
        </label>
        <label class="inline-check">
          <span>
            <input type="checkbox" name="reply_all" value="1" /> Reply to all
          </span>
        </label>
        <button type="submit">Send reply</button>
      </form>
      <h2>Forward</h2>
      <form method="post" action={`${base}/forward`} class="narrow">
        <label>
          To
          <input name="to" required />
        </label>
        <label>
          Note
          <textarea name="body_text" />
        </label>
        <button type="submit" class="secondary">
          Forward
        </button>
      </form>
      <h2>Headers</h2>
      <dl class="kv">
        {Object.entries(m.headers).map(([k, v]) => (
          <>
            <dt>{k}</dt>
            <dd>
              <code>{Array.isArray(v) ? v.join(" | ") : v}</code>
            </dd>
          </>
        ))}
      </dl>
    </>,
    status,
  );
}
dashboardRoutes.get("/inboxes/:id/messages/:mid", (c) => messagePage(c, null));

/**
 * The message's HTML, for the sandboxed frame only. Its own CSP: no script at all, no forms, no
 * frames, no connections; images and styles only from data: (and the network only when the
 * person asked for remote content); `sandbox` repeats the iframe's sandbox so opening this URL
 * directly is just as inert. Links get rel="noopener noreferrer" and open in a new tab.
 */
dashboardRoutes.get("/inboxes/:id/messages/:mid/html", async (c) => {
  scope(c, "read");
  const ctx = ctxOf(c);
  const m = await withBodies(ctx, await getMessage(ctx, c.req.param("id"), c.req.param("mid")));
  const html = toMessageWire(m).body_html ?? "";
  const remote = c.req.query("remote") === "1" ? " https: http:" : "";
  const csp = [
    "default-src 'none'",
    "script-src 'none'",
    `img-src data: cid:${remote}`,
    `style-src 'unsafe-inline'${remote}`,
    `font-src data:${remote}`,
    "form-action 'none'",
    "frame-src 'none'",
    "connect-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'self'",
    "sandbox allow-popups allow-popups-to-escape-sandbox",
  ].join("; ");
  const doc = `<!doctype html><meta charset="utf-8"><meta name="referrer" content="no-referrer"><base target="_blank">${html.replace(/<a\b/gi, '<a rel="noopener noreferrer"')}`;
  return c.body(doc, 200, {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": csp,
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "no-referrer",
  });
});
dashboardRoutes.get("/inboxes/:id/messages/:mid/raw", async (c) => {
  scope(c, "read");
  const obj = await getRaw(ctxOf(c), c.req.param("id"), c.req.param("mid"));
  return c.body(obj.body, 200, {
    "Content-Type": "message/rfc822",
    "Content-Disposition": `attachment; filename="${c.req.param("mid")}.eml"`,
    // The sender chose these bytes: no browser may guess a renderable type from them.
    "X-Content-Type-Options": "nosniff",
  });
});
dashboardRoutes.get("/inboxes/:id/messages/:mid/attachments/:aid", async (c) => {
  scope(c, "read");
  const { row, body } = await getAttachment(ctxOf(c), c.req.param("id"), c.req.param("mid"), c.req.param("aid"));
  // Always a download, never rendered in our origin: the sender chose the bytes and the type.
  return c.body(body.body, 200, {
    "Content-Type": "application/octet-stream",
    "Content-Disposition": `attachment; filename="${(row.filename ?? row.id).replace(/[^\w.-]/g, "_")}"`,
    "X-Content-Type-Options": "nosniff",
  });
});
dashboardRoutes.post("/inboxes/:id/messages/:mid/labels", async (c) => {
  const f = await form(c);
  const r = await attempt(c, async () => {
    scope(c, "manage");
    return patchMessage(
      ctxOf(c),
      c.req.param("id"),
      c.req.param("mid"),
      PatchMessageInput.parse({ labels: list(f.labels) }),
    );
  });
  if (!r.ok) return messagePage(c, r.error, r.status);
  return c.redirect(`/dashboard/inboxes/${c.req.param("id")}/messages/${c.req.param("mid")}`, 303);
});
dashboardRoutes.post("/inboxes/:id/messages/:mid/:verb{reply|forward}", async (c) => {
  const f = await form(c);
  const mid = c.req.param("mid");
  const r = await attempt(c, async () => {
    scope(c, "send");
    const ctx = ctxOf(c);
    await getMessage(ctx, c.req.param("id"), mid); // the message must be in this inbox (404 otherwise)
    return c.req.param("verb") === "reply"
      ? replyToMessage(ctx, mid, ReplyToMessageInput.parse({ body_text: f.body_text, reply_all: f.reply_all === "1" }))
      : forwardMessage(ctx, mid, ForwardInput.parse({ to: list(f.to), body_text: opt(f.body_text) }));
  });
  if (!r.ok) return messagePage(c, r.error, r.status);
  return c.redirect(`/dashboard/inboxes/${r.value.inboxId}/threads/${r.value.threadId}`, 303);
});

// ---------------------------------------------------------------- compose
function Compose(props: { id: string; error: Err; values: Record<string, string> }) {
  const v = props.values;
  return (
    <>
      <ErrorBox error={props.error} />
      <form method="post" action={`/dashboard/inboxes/${props.id}/compose`} class="narrow">
        <label>
          To (comma-separated)
          <input name="to" required value={v.to ?? ""} />
        </label>
        <label>
          Subject
          <input name="subject" value={v.subject ?? ""} />
        </label>
        <label>
          Text
          <textarea name="body_text">{v.body_text ?? ""}</textarea>
        </label>
        <label>
          HTML (optional)
          <textarea name="body_html">{v.body_html ?? ""}</textarea>
        </label>
        <button type="submit">Send</button>
      </form>
    </>
  );
}
dashboardRoutes.get("/inboxes/:id/compose", async (c) => {
  scope(c, "send");
  const inbox = await getInbox(ctxOf(c), c.req.param("id"));
  return render(c, `Compose from ${inbox.address}`, <Compose id={inbox.id} error={null} values={{}} />);
});
dashboardRoutes.post("/inboxes/:id/compose", async (c) => {
  const f = await form(c);
  const id = c.req.param("id");
  const r = await attempt(c, async () => {
    scope(c, "send");
    const input = SendMessageInput.parse({
      to: list(f.to),
      subject: f.subject ?? "",
      body_text: opt(f.body_text),
      body_html: opt(f.body_html),
    });
    return sendMessage(ctxOf(c), id, input);
  });
  if (!r.ok) return render(c, "Compose", <Compose id={id} error={r.error} values={f} />, r.status);
  return c.redirect(`/dashboard/inboxes/${id}/messages/${r.value.id}`, 303);
});

// ---------------------------------------------------------------- domains
async function domainsPage(c: C, error: Err, status = 200) {
  scope(c, "read");
  const rows = await listDomains(ctxOf(c), { limit: 100 });
  return render(
    c,
    "Domains",
    <>
      <ErrorBox error={error} />
      <form method="post" action="/dashboard/domains" class="row">
        <label>
          Domain
          <input name="domain" required placeholder="example.com" />
        </label>
        <button type="submit">Add domain</button>
      </form>
      {rows.length === 0 ? (
        <Empty>No custom domains. Inboxes use the shared domain until you add one here.</Empty>
      ) : (
        <table>
          <thead>
            <tr>
              <th>Domain</th>
              <th>Status</th>
              <th>Checked</th>
            </tr>
          </thead>
          <tbody>
            {rows
              .map((r) => toDomainWire(c.env, r))
              .map((d) => (
                <tr>
                  <td>
                    <a href={`/dashboard/domains/${d.id}`}>{d.domain}</a>
                  </td>
                  <td>
                    <Status value={d.status} />
                  </td>
                  <td>
                    <When at={d.last_checked_at} />
                  </td>
                </tr>
              ))}
          </tbody>
        </table>
      )}
    </>,
    status,
  );
}
dashboardRoutes.get("/domains", (c) => domainsPage(c, null));
dashboardRoutes.post("/domains", async (c) => {
  const f = await form(c);
  const r = await attempt(c, () => {
    scope(c, "manage");
    return addDomain(ctxOf(c), CreateDomainInput.parse({ domain: f.domain }));
  });
  if (!r.ok) return domainsPage(c, r.error, r.status);
  return c.redirect(`/dashboard/domains/${r.value.id}`, 303);
});
async function domainPage(c: C, note: string | null, error: Err) {
  scope(c, "read");
  const d = toDomainWire(c.env, await getDomain(ctxOf(c), c.req.param("did") as string));
  return render(
    c,
    d.domain,
    <>
      <ErrorBox error={error} />
      {note && (
        <div class="box notice" role="status">
          {note}
        </div>
      )}
      <p>
        <Id value={d.id} /> · <Status value={d.status} /> · checked <When at={d.last_checked_at} />
      </p>
      <h2>DNS records to publish</h2>
      <table>
        <thead>
          <tr>
            <th>Purpose</th>
            <th>Type</th>
            <th>Name</th>
            <th>Value</th>
            <th>Result</th>
          </tr>
        </thead>
        <tbody>
          {d.dns_records.map((r) => (
            <tr>
              <td>{r.purpose}</td>
              <td>{r.type}</td>
              <td>
                <code>{r.name}</code>
                <button type="button" class="copy secondary" data-copy={r.name}>
                  copy
                </button>
              </td>
              <td>
                <code>{r.value}</code>
                <button type="button" class="copy secondary" data-copy={r.value}>
                  copy
                </button>
              </td>
              <td>
                <Status value={r.status} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <form method="post" action={`/dashboard/domains/${d.id}/verify`} class="row">
        <button type="submit">Verify now</button>
      </form>
    </>,
  );
}
dashboardRoutes.get("/domains/:did", (c) => domainPage(c, null, null));
dashboardRoutes.post("/domains/:did/verify", async (c) => {
  const r = await attempt(c, () => {
    scope(c, "manage");
    return verifyDomain(ctxOf(c), c.req.param("did"));
  });
  if (!r.ok) return domainPage(c, null, r.error);
  return domainPage(c, r.value.next_step ?? `Status: ${r.value.status}`, null);
});

// ---------------------------------------------------------------- webhooks
async function webhooksPage(c: C, error: Err, secret: string | null, status = 200) {
  scope(c, "read");
  const rows = await listWebhooks(ctxOf(c), { limit: 100 });
  return render(
    c,
    "Webhooks",
    <>
      <ErrorBox error={error} />
      {secret && (
        <div class="box notice" role="status">
          Signing secret, shown once: <div class="secret">{secret}</div>
        </div>
      )}
      <form method="post" action="/dashboard/webhooks" class="row">
        <label>
          URL
          <input name="url" required type="url" />
        </label>
        <label>
          Events (comma-separated, * for all)
          <input name="events" value="*" />
        </label>
        <button type="submit">Add webhook</button>
      </form>
      {rows.length === 0 ? (
        <Empty>No webhooks. Add an HTTPS endpoint to be told when mail arrives or is delivered.</Empty>
      ) : (
        <table>
          <thead>
            <tr>
              <th>URL</th>
              <th>Events</th>
              <th>Enabled</th>
            </tr>
          </thead>
          <tbody>
            {rows.map(toWebhookWire).map((w) => (
              <tr>
                <td>
                  <a href={`/dashboard/webhooks/${w.id}`}>{w.url}</a>
                </td>
                <td>{w.events.join(", ")}</td>
                <td>{w.enabled ? <Status value="active" /> : <Status value="disabled" />}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>,
    status,
  );
}
dashboardRoutes.get("/webhooks", (c) => webhooksPage(c, null, null));
dashboardRoutes.post("/webhooks", async (c) => {
  const f = await form(c);
  const r = await attempt(c, () => {
    scope(c, "manage");
    return createWebhook(ctxOf(c), CreateWebhookInput.parse({ url: f.url, events: list(f.events || "*") }));
  });
  if (!r.ok) return webhooksPage(c, r.error, null, r.status);
  return webhooksPage(c, null, r.value.secret, 201);
});
async function webhookPage(c: C, note: string | null, error: Err) {
  scope(c, "read");
  const ctx = ctxOf(c);
  const w = toWebhookWire(await getWebhook(ctx, c.req.param("wid") as string));
  const deliveries = (await listDeliveries(ctx, w.id, { limit: 50 })).slice(0, 50).map(toDeliveryWire);
  return render(
    c,
    `Webhook ${w.url}`,
    <>
      <ErrorBox error={error} />
      {note && (
        <div class="box notice" role="status">
          {note}
        </div>
      )}
      <p>
        <Id value={w.id} /> · events {w.events.join(", ")}
      </p>
      <form method="post" action={`/dashboard/webhooks/${w.id}/test`} class="row">
        <button type="submit">Send a test event</button>
      </form>
      <h2>Deliveries</h2>
      {deliveries.length === 0 ? (
        <Empty>No deliveries yet. Send a test event, then reload.</Empty>
      ) : (
        <table>
          <thead>
            <tr>
              <th>Event</th>
              <th>Result</th>
              <th>Response</th>
              <th>When</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {deliveries.map((d) => (
              <tr>
                <td>
                  <code>{d.event_type}</code> <span class="muted">#{d.attempt}</span>
                </td>
                <td>
                  <Status value={d.status} />
                </td>
                <td>
                  {d.status_code ?? d.error ?? ""} <span class="muted">{d.duration_ms} ms</span>
                </td>
                <td>
                  <When at={d.created_at} />
                </td>
                <td>
                  <form method="post" action={`/dashboard/webhooks/${w.id}/replay`} class="inline">
                    <input type="hidden" name="event_id" value={d.event_id} />
                    <button type="submit" class="secondary">
                      Replay
                    </button>
                  </form>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>,
  );
}
dashboardRoutes.get("/webhooks/:wid", (c) => webhookPage(c, null, null));
dashboardRoutes.post("/webhooks/:wid/test", async (c) => {
  const r = await attempt(c, () => {
    scope(c, "manage");
    return sendTestEvent(ctxOf(c), c.req.param("wid"));
  });
  return r.ok ? webhookPage(c, `Test event ${r.value.event_id} queued.`, null) : webhookPage(c, null, r.error);
});
dashboardRoutes.post("/webhooks/:wid/replay", async (c) => {
  const f = await form(c);
  const r = await attempt(c, () => {
    scope(c, "manage");
    return replayEvent(ctxOf(c), f.event_id ?? "", { webhook_id: c.req.param("wid") });
  });
  return r.ok ? webhookPage(c, `Event ${r.value.eventId} queued again.`, null) : webhookPage(c, null, r.error);
});

// ---------------------------------------------------------------- events (live)
function EventRows(props: { rows: ReturnType<typeof toEventWire>[] }) {
  return (
    <>
      {props.rows.map((e) => (
        <tr>
          <td>
            <code>{e.type}</code>
          </td>
          <td>
            <code class="id">{e.id}</code>
          </td>
          <td>{String(e.data.subject ?? e.data.message_id ?? "")}</td>
          <td>
            <When at={e.created_at} />
          </td>
        </tr>
      ))}
    </>
  );
}
dashboardRoutes.get("/events", async (c) => {
  scope(c, "read");
  const rows = (await listEvents(ctxOf(c), {}, { limit: 50 })).slice(0, 50).map(toEventWire);
  return render(
    c,
    "Events",
    <>
      <p id="live-status" class="muted" role="status">
        Live updates start in a moment.
      </p>
      <table id="event-feed" data-after={rows[0]?.id ?? ""} data-types={EVENT_TYPES.join(" ")}>
        <thead>
          <tr>
            <th>Type</th>
            <th>Id</th>
            <th>About</th>
            <th>When</th>
          </tr>
        </thead>
        <tbody>
          {rows.length === 0 ? (
            <tr class="empty-row">
              <td colspan={4}>
                No events yet. Create an inbox or receive a message; events appear here as they happen.
              </td>
            </tr>
          ) : (
            <EventRows rows={rows} />
          )}
        </tbody>
      </table>
    </>,
  );
});
/**
 * The live page's stream: the API's `GET /v1/events/stream`, opened through the same hub client
 * with the session's key id, so the same rules hold: the key's scope and inbox restriction, its
 * tier's cap on open streams (429 `connection_limit_reached`, and the page falls back to polling
 * /events/feed), and revoking the key or suspending the account ends the stream at once. The hub
 * ends a stream after 30 minutes; EventSource reconnects with Last-Event-ID, which re-checks the
 * session, so a signed-out or expired session gets no more than that.
 */
dashboardRoutes.get("/events/stream", async (c) => {
  const auth = scope(c, "read");
  const cursor = c.req.header("Last-Event-ID")?.trim() || c.req.query("after") || "";
  const limits = tierLimits(config(c.env).tiers, auth.account.tier);
  const stream = await openEventStream(ctxOf(c), {
    transport: "sse",
    types: [],
    inboxId: null,
    after: /^evt_[0-9a-z]{26}$/.test(cursor) ? cursor : null,
    keyId: auth.key.id,
    cap: limits.stream_connections,
    accountCap: limits.stream_connections_per_account,
  });
  if (!("body" in stream)) throw new Error("an SSE stream without a body");
  return c.body(stream.body, 200, {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store, no-transform",
    "X-Accel-Buffering": "no",
  });
});
/** The live page's poll (when the stream cannot open): events after the newest one shown, as rows (newest first). */
dashboardRoutes.get("/events/feed", async (c) => {
  scope(c, "read");
  const ctx = ctxOf(c);
  const after = c.req.query("after") ?? "";
  const rows = /^evt_[0-9a-z]{26}$/.test(after)
    ? await eventsAfter(ctx, after, {}, 50, 0)
    : (await listEvents(ctx, {}, { limit: 50 })).slice(0, 50).reverse();
  const wires = rows.map(toEventWire);
  const last = wires.at(-1)?.id ?? after;
  const html = wires.length ? String(<EventRows rows={wires.reverse()} />) : "";
  return c.json({ html, after: last });
});

// ---------------------------------------------------------------- audit log
async function auditPage(c: C, verified: { ok: boolean; checked: number; first_broken_id: string | null } | null) {
  scope(c, "read");
  const q = c.req.query();
  const filters = auditFilters({ action: opt(q.action), target_id: opt(q.target_id) } as never);
  const { items, nextCursor } = pageOf(await listAudit(ctxOf(c), filters, toPage({ limit: 50, cursor: q.cursor })), 50);
  return render(
    c,
    "Audit log",
    <>
      {verified && (
        <div class={`box ${verified.ok ? "notice" : "error"}`} role="status" id="verify-result">
          {verified.ok
            ? `Chain intact: ${verified.checked.toLocaleString("en")} entries checked.`
            : `Chain broken at entry ${verified.first_broken_id} (${verified.checked} checked).`}
        </div>
      )}
      <form method="post" action="/dashboard/audit/verify" class="row">
        <button type="submit">Verify chain</button>
      </form>
      <form method="get" action="/dashboard/audit" class="row">
        <label>
          Action
          <input name="action" value={q.action ?? ""} placeholder="inbox.created" />
        </label>
        <label>
          Target id
          <input name="target_id" value={q.target_id ?? ""} />
        </label>
        <button type="submit" class="secondary">
          Filter
        </button>
      </form>
      {items.length === 0 ? (
        <Empty>No audit entries match. Every change to the account is written here.</Empty>
      ) : (
        <table>
          <thead>
            <tr>
              <th>#</th>
              <th>Action</th>
              <th>Actor</th>
              <th>Target</th>
              <th>When</th>
            </tr>
          </thead>
          <tbody>
            {items.map(toAuditWire).map((e) => (
              <tr>
                <td>{e.seq}</td>
                <td>
                  <code>{e.action}</code>
                </td>
                <td>
                  {e.actor.type}
                  {e.actor.id ? ` ${e.actor.id}` : ""}
                </td>
                <td>{e.target ? `${e.target.type} ${e.target.id}` : ""}</td>
                <td>
                  <When at={e.created_at} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <NextLink base="/dashboard/audit" cursor={nextCursor} />
    </>,
  );
}
dashboardRoutes.get("/audit", (c) => auditPage(c, null));
dashboardRoutes.post("/audit/verify", async (c) => {
  requireFullAccess(api(c));
  return auditPage(c, await verifyAudit(ctxOf(c)));
});

// ---------------------------------------------------------------- API keys
async function keysPage(c: C, error: Err, created: string | null, status = 200) {
  requireFullAccess(api(c));
  const ctx = ctxOf(c);
  const rows = (await listKeys(ctx, { limit: 100 })).slice(0, 100).map(toKeyWire);
  const current = c.get("session");
  return render(
    c,
    "API keys",
    <>
      <ErrorBox error={error} />
      {created && (
        <div class="box notice" role="status">
          New key, shown once: copy it now.{" "}
          <div class="secret" id="new-key">
            {created}
          </div>
        </div>
      )}
      <form method="post" action="/dashboard/keys" class="row">
        <label>
          Name
          <input name="name" required />
        </label>
        <fieldset>
          <legend>Scopes</legend>
          {SCOPES.map((s) => (
            <label>
              <span>
                <input type="checkbox" name={`scope_${s}`} value="1" checked={s === "full"} /> {s}
              </span>
            </label>
          ))}
        </fieldset>
        <label>
          Only these inbox ids (optional)
          <input name="inbox_ids" placeholder="inb_…, inb_…" />
        </label>
        <button type="submit">Create key</button>
      </form>
      <table>
        <thead>
          <tr>
            <th>Name</th>
            <th>Prefix</th>
            <th>Scopes</th>
            <th>Inboxes</th>
            <th>Last used</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {rows.map((k) => (
            <tr>
              <td>{k.name}</td>
              <td>
                <code>{k.prefix}</code>
              </td>
              <td>{k.scopes.join(", ")}</td>
              <td>{k.inbox_ids ? k.inbox_ids.join(", ") : "all"}</td>
              <td>
                <When at={k.last_used_at} />
              </td>
              <td>
                {k.revoked_at ? (
                  <Status value="revoked" />
                ) : current?.kind === "account" && current.key.id === k.id ? (
                  <span class="muted">this session</span>
                ) : (
                  <form
                    method="post"
                    action={`/dashboard/keys/${k.id}/revoke`}
                    class="inline"
                    data-confirm={`Revoke ${k.name}?`}
                  >
                    <button type="submit" class="danger" aria-label={`Revoke ${k.name}`}>
                      Revoke
                    </button>
                  </form>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </>,
    status,
  );
}
dashboardRoutes.get("/keys", (c) => keysPage(c, null, null));
dashboardRoutes.post("/keys", async (c) => {
  const f = await form(c);
  const r = await attempt(c, () => {
    requireFullAccess(api(c));
    const ids = list(f.inbox_ids);
    return createKey(ctxOf(c), {
      name: f.name ?? "",
      scopes: SCOPES.filter((s) => f[`scope_${s}`] === "1"),
      inbox_ids: ids.length ? ids : null,
    });
  });
  if (!r.ok) return keysPage(c, r.error, null, r.status);
  return keysPage(c, null, r.value.key, 201);
});
dashboardRoutes.post("/keys/:kid/revoke", async (c) => {
  requireFullAccess(api(c));
  await revokeKey(ctxOf(c), c.req.param("kid"));
  return c.redirect("/dashboard/keys", 303);
});

// ---------------------------------------------------------------- suppressions
dashboardRoutes.get("/suppressions", async (c) => {
  scope(c, "read");
  const ctx = ctxOf(c);
  const { items, nextCursor } = pageOf(
    await listSuppressions(
      ctx,
      { address: opt(c.req.query("address")) },
      toPage({ limit: 50, cursor: c.req.query("cursor") }),
    ),
    50,
  );
  return render(
    c,
    "Suppressions",
    <>
      {items.length === 0 ? (
        <Empty>
          No suppressed addresses. Hard bounces and complaints add addresses here, and sends to them are refused.
        </Empty>
      ) : (
        <table>
          <thead>
            <tr>
              <th>Address</th>
              <th>Reason</th>
              <th>Since</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {items
              .map((r) => toSuppressionWire(r, ctx.inboxIds ?? null))
              .map((s) => (
                <tr>
                  <td>{s.address}</td>
                  <td>
                    <code>{s.reason}</code>
                  </td>
                  <td>
                    <When at={s.created_at} />
                  </td>
                  <td>
                    <form
                      method="post"
                      action={`/dashboard/suppressions/${encodeURIComponent(s.address)}/lift`}
                      class="inline"
                    >
                      <button type="submit" class="secondary">
                        Lift
                      </button>
                    </form>
                  </td>
                </tr>
              ))}
          </tbody>
        </table>
      )}
      <NextLink base="/dashboard/suppressions" cursor={nextCursor} />
    </>,
  );
});
dashboardRoutes.post("/suppressions/:address/lift", async (c) => {
  scope(c, "manage");
  // Hono has already percent-decoded the parameter: decoding again would turn an address
  // holding `%` into another address, and a stray `%` into a URIError (500).
  await deleteSuppression(ctxOf(c), c.req.param("address"));
  return c.redirect("/dashboard/suppressions", 303);
});

// ---------------------------------------------------------------- operator
/** Suspend/reactivate and lift-limit buttons; a deleted account is final (the service refuses with 409). */
function AccountActions(props: { a: AccountRow; now: number; back?: string }) {
  const { a } = props;
  if (a.status === "deleted") return <span class="muted">closed</span>;
  const action = `/dashboard/operator/accounts/${a.id}`;
  return (
    <>
      <form method="post" action={action} class="inline">
        {props.back && <input type="hidden" name="back" value={props.back} />}
        <input type="hidden" name="status" value={a.status === "active" ? "suspended" : "active"} />
        <button type="submit" class={a.status === "active" ? "danger" : "secondary"}>
          {a.status === "active" ? "Suspend" : "Reactivate"}
        </button>
      </form>{" "}
      {a.newAccountUntil > props.now && (
        <form method="post" action={action} class="inline">
          {props.back && <input type="hidden" name="back" value={props.back} />}
          <input type="hidden" name="lift" value="1" />
          <button type="submit" class="secondary">
            Lift limit
          </button>
        </form>
      )}
    </>
  );
}

function NewAccountLimit(props: { a: AccountRow; now: number }) {
  return props.a.newAccountUntil > props.now ? (
    <span>
      until <When at={new Date(props.a.newAccountUntil).toISOString()} />
    </span>
  ) : (
    <>lifted</>
  );
}

dashboardRoutes.get("/operator/accounts", async (c) => {
  const base = requestContext(api(c));
  const search = (c.req.query("q") ?? "").trim().slice(0, 200);
  // The search runs in SQL over every account (the API's `GET /v1/admin/accounts?q=`), paged.
  const { items: shown, nextCursor } = pageOf(
    await listAllAccounts(base, toPage({ limit: 50, cursor: c.req.query("cursor") }), search || undefined),
    50,
  );
  const now = Date.now();
  return render(
    c,
    "Accounts",
    <>
      <form method="get" action="/dashboard/operator/accounts" class="row">
        <label>
          Search (start of email, name or id; @domain)
          <input name="q" value={search} type="search" />
        </label>
        <button type="submit" class="secondary">
          Search
        </button>
      </form>
      {shown.length === 0 ? (
        <Empty>No accounts{search ? " match" : " yet"}.</Empty>
      ) : (
        <table>
          <thead>
            <tr>
              <th>Email</th>
              <th>Id</th>
              <th>Tier</th>
              <th>Status</th>
              <th>New-account limit</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {shown.map((a) => (
              <tr>
                <td>
                  <a href={`/dashboard/operator/accounts/${a.id}`}>{a.email}</a>
                </td>
                <td>
                  <Id value={a.id} />
                </td>
                <td>
                  <code>{a.tier}</code>
                </td>
                <td>
                  <Status value={a.status} />
                </td>
                <td>
                  <NewAccountLimit a={a} now={now} />
                </td>
                <td>
                  <AccountActions a={a} now={now} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <NextLink
        base={`/dashboard/operator/accounts${search ? `?q=${encodeURIComponent(search)}` : ""}`}
        cursor={nextCursor}
      />
    </>,
  );
});

/**
 * One account for the operator: its state and its inboxes, with why each disabled one is
 * disabled (and, for a rate disable, the figures) and a re-enable button. Opening it is audited
 * on the account (`account.admin_viewed`), as `GET /v1/admin/accounts/:id` is.
 */
dashboardRoutes.get("/operator/accounts/:aid", async (c) => {
  const ctx = contextFor(api(c), c.req.param("aid"));
  const a = await adminViewAccount(ctx);
  const { items, nextCursor } = pageOf(
    await listInboxes(ctx, toPage({ limit: 50, cursor: c.req.query("cursor") })),
    50,
  );
  // Reputation figures only where they matter to the decision (one counter call per disabled inbox).
  const reps = new Map(
    await Promise.all(
      items
        .filter((i) => i.status === "disabled" && i.disabledReason !== "deactivated")
        .map(async (i) => [i.id, await getReputation(ctx, i.id)] as const),
    ),
  );
  const now = Date.now();
  return render(
    c,
    a.email,
    <>
      <p>
        <Id value={a.id} /> · <code>{a.tier}</code> · <Status value={a.status} /> · new-account limit{" "}
        <NewAccountLimit a={a} now={now} /> · <AccountActions a={a} now={now} back="account" />
      </p>
      <h2>Inboxes</h2>
      {items.length === 0 ? (
        <Empty>This account has no inboxes.</Empty>
      ) : (
        <table>
          <thead>
            <tr>
              <th>Address</th>
              <th>Id</th>
              <th>Status</th>
              <th>Disabled because</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {items.map((i) => {
              const rep = reps.get(i.id);
              return (
                <tr>
                  <td>{i.address}</td>
                  <td>
                    <Id value={i.id} />
                  </td>
                  <td>
                    <Status value={i.status} />
                  </td>
                  <td>
                    {i.disabledReason && <code>{i.disabledReason}</code>}
                    {rep && (
                      <span class="muted">
                        {" "}
                        {rep.bounced} bounced, {rep.complained} complaints of {rep.sent} sent in {rep.window_days} days
                      </span>
                    )}
                  </td>
                  <td>
                    {i.status === "disabled" && (
                      <form method="post" action={`/dashboard/operator/inboxes/${i.id}/enable`} class="inline">
                        <button type="submit" class="secondary">
                          Re-enable
                        </button>
                      </form>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {items.some((i) => i.disabledReason === "bounce_rate" || i.disabledReason === "complaint_rate") && (
        <p class="muted">
          An inbox disabled for its rates keeps its 7-day history: one more bounce or complaint over the threshold
          disables it again at once.
        </p>
      )}
      <NextLink base={`/dashboard/operator/accounts/${a.id}`} cursor={nextCursor} />
    </>,
  );
});
dashboardRoutes.post("/operator/accounts/:aid", async (c) => {
  const f = await form(c);
  const aid = c.req.param("aid");
  const patch: { status?: "active" | "suspended"; new_account_until?: null } = {};
  if (f.status === "active" || f.status === "suspended") patch.status = f.status;
  if (f.lift === "1") patch.new_account_until = null;
  await adminPatchAccount(contextFor(api(c), aid), AdminAccountPatch.parse(patch));
  return c.redirect(f.back === "account" ? `/dashboard/operator/accounts/${aid}` : "/dashboard/operator/accounts", 303);
});
/** The API's `POST /v1/admin/inboxes/:id/enable` verb: audited `inbox.enabled` with the figures and operator_review. */
dashboardRoutes.post("/operator/inboxes/:iid/enable", async (c) => {
  const row = await adminEnableInbox(requestContext(api(c)), c.req.param("iid"));
  return c.redirect(`/dashboard/operator/accounts/${row.accountId}`, 303);
});
