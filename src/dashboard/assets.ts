/**
 * The dashboard's only stylesheet and script, served from the Worker itself (no CDN, no web
 * fonts): the page CSP allows scripts and styles from 'self' only, so nothing inline runs.
 */
export const CSS = `
:root{--fg:#1b1f24;--muted:#5b6470;--bg:#fff;--panel:#f5f6f8;--line:#d9dde3;--accent:#1f5fbf;--ok:#17692f;--warn:#8a5a00;--bad:#b3261e}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);display:flex;min-height:100vh}
a{color:var(--accent)}
:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
nav{width:200px;background:var(--panel);border-right:1px solid var(--line);padding:12px;display:flex;flex-direction:column;gap:2px;flex-shrink:0}
nav .brand{font-weight:700;margin:4px 6px 12px}
nav a{display:block;padding:5px 8px;border-radius:4px;text-decoration:none;color:var(--fg)}
nav a[aria-current=page]{background:#dfe7f5;font-weight:600}
nav .section{margin:12px 8px 2px;font-size:12px;color:var(--muted);text-transform:uppercase}
nav .foot{margin-top:auto;font-size:12px;color:var(--muted);padding:8px}
main{flex:1;padding:20px 28px;max-width:1100px;min-width:0}
h1{font-size:20px;margin:0 0 14px}h2{font-size:16px;margin:22px 0 8px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{position:sticky;top:0;background:var(--panel)}
code,.id{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
form.narrow{max-width:460px;display:flex;flex-direction:column;gap:8px}
form.inline{display:inline}
form.row{display:flex;gap:8px;flex-wrap:wrap;align-items:end;margin:8px 0}
label{display:flex;flex-direction:column;gap:2px;font-weight:600;font-size:13px}
input,select,textarea{font:inherit;padding:5px 7px;border:1px solid #8b939e;border-radius:4px}
textarea{min-height:120px}
button{font:inherit;padding:5px 12px;border-radius:4px;border:1px solid var(--accent);background:var(--accent);color:#fff;cursor:pointer}
button.secondary{background:#fff;color:var(--accent)}
button.danger{background:#fff;color:var(--bad);border-color:var(--bad)}
.st{font-weight:600}.st-ok{color:var(--ok)}.st-warn{color:var(--warn)}.st-bad{color:var(--bad)}.st-neutral{color:var(--muted)}
.box{border:1px solid var(--line);border-radius:6px;padding:12px;margin:10px 0;background:#fff}
.error{border-color:var(--bad);background:#fdf1f0}
.notice{border-color:var(--ok);background:#eef8f0}
.empty{color:var(--muted);border:1px dashed var(--line);padding:16px;border-radius:6px}
.muted{color:var(--muted)}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:10px}
.secret{font-family:ui-monospace,monospace;background:#fff8e1;padding:6px;border:1px solid #e0c060;word-break:break-all}
.timeline{list-style:none;padding:0}.timeline li{border-left:3px solid var(--line);padding:6px 12px;margin:6px 0}
.timeline li.outbound{border-color:var(--accent);margin-left:60px}
iframe.mail{width:100%;height:480px;border:1px solid var(--line);background:#fff}
pre.text{white-space:pre-wrap;word-break:break-word;background:var(--panel);padding:10px;border-radius:4px}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:3px 12px}dl.kv dt{color:var(--muted)}dl.kv dd{margin:0;word-break:break-word}
svg.bar rect.track{fill:#e6e9ee}svg.bar rect.fill{fill:var(--accent)}svg.bar line{stroke:var(--warn);stroke-width:2}
.copy{margin-left:4px;padding:0 6px;font-size:11px}
`;

export const JS = `
document.addEventListener("click", function (e) {
  var b = e.target.closest && e.target.closest("button.copy");
  if (!b) return;
  e.preventDefault();
  navigator.clipboard && navigator.clipboard.writeText(b.getAttribute("data-copy") || "").then(function () { b.textContent = "copied"; });
});
document.querySelectorAll("time[datetime]").forEach(function (t) {
  var ms = Date.parse(t.getAttribute("datetime")); if (isNaN(ms)) return;
  var s = Math.round((Date.now() - ms) / 1000), a = Math.abs(s), w;
  w = a < 60 ? a + " s" : a < 3600 ? Math.round(a / 60) + " min" : a < 86400 ? Math.round(a / 3600) + " h" : Math.round(a / 86400) + " d";
  t.title = t.getAttribute("datetime"); t.textContent = s >= 0 ? w + " ago" : "in " + w;
});
document.querySelectorAll("form[data-confirm]").forEach(function (f) {
  f.addEventListener("submit", function (e) { if (!confirm(f.getAttribute("data-confirm"))) e.preventDefault(); });
});
var feed = document.getElementById("event-feed");
if (feed) {
  var after = feed.getAttribute("data-after") || "";
  // Not "status": a global var of that name is window.status, which turns the element into a string.
  var liveStatus = document.getElementById("live-status");
  function add(html) { var tb = feed.querySelector("tbody"); tb.insertAdjacentHTML("afterbegin", html); var e = feed.querySelector(".empty-row"); if (e) e.remove(); }
  function cell(tr, text, cls) { var td = document.createElement("td"); if (cls) { var c = document.createElement(cls === "id" ? "code" : cls); if (cls === "id") c.className = "id"; c.textContent = text; td.appendChild(c); } else td.textContent = text; tr.appendChild(td); return td; }
  function addEvent(ev) {
    var tr = document.createElement("tr");
    cell(tr, ev.type, "code"); cell(tr, ev.id, "id");
    cell(tr, String((ev.data && (ev.data.subject || ev.data.message_id)) || ""));
    var t = document.createElement("time"); t.setAttribute("datetime", ev.created_at); t.textContent = "just now"; t.title = ev.created_at;
    var td = document.createElement("td"); td.appendChild(t); tr.appendChild(td);
    feed.querySelector("tbody").insertBefore(tr, feed.querySelector("tbody").firstChild);
    var e = feed.querySelector(".empty-row"); if (e) e.remove();
  }
  function poll() {
    fetch("/dashboard/events/feed?after=" + encodeURIComponent(after), { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.json(); })
      .then(function (d) { if (d.html) add(d.html); if (d.after) after = d.after; liveStatus.textContent = "Live: checked " + new Date().toLocaleTimeString(); })
      .catch(function () { liveStatus.textContent = "Live updates paused (reload to retry)"; })
      .finally(function () { setTimeout(poll, 3000); });
  }
  // The stream first (events as they commit); polling when it cannot open (no EventSource, the
  // key's stream cap reached, the session gone) - EventSource gives up (CLOSED) on such answers.
  if (window.EventSource) {
    var es = new EventSource("/dashboard/events/stream" + (after ? "?after=" + encodeURIComponent(after) : ""));
    var onEvent = function (m) { try { var ev = JSON.parse(m.data); addEvent(ev); after = ev.id; } catch (x) {} };
    (feed.getAttribute("data-types") || "").split(" ").forEach(function (t) { if (t) es.addEventListener(t, onEvent); });
    es.onopen = function () { liveStatus.textContent = "Live: streaming"; };
    es.onerror = function () {
      if (es.readyState === 2) { liveStatus.textContent = "Live: checking every few seconds"; setTimeout(poll, 1500); }
      else liveStatus.textContent = "Live: reconnecting";
    };
  } else setTimeout(poll, 1500);
}
`;
