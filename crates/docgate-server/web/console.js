// The operator console: lists a tenant's uploads, shows one with its history, and retries,
// cancels or erases it. The API key lives in this module's memory only.
const $ = (id) => document.getElementById(id);
let key = null;
let cursor = null;
let current = null;
let refresh = null;
const FINAL = new Set(["delivered", "duplicate", "rejected", "failed", "canceled"]);

function notice(text, kind = "") {
  $("notice").textContent = text;
  $("notice").className = kind;
}

async function api(path, init = {}) {
  const res = await fetch(path, { ...init, headers: { Authorization: `Bearer ${key}`, ...(init.headers || {}) } });
  const text = await res.text();
  let body = {};
  try { body = text ? JSON.parse(text) : {}; } catch { body = { detail: text }; }
  if (!res.ok) {
    const err = new Error([body.title, body.detail].filter(Boolean).join(" — ") || `HTTP ${res.status}`);
    err.status = res.status;
    err.body = body;
    throw err;
  }
  return body;
}

const itemsOf = (page) => page.items || page.uploads || [];

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  return td;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function query(extra = {}) {
  const q = new URLSearchParams();
  const status = $("f-status").value;
  const provider = $("f-provider").value;
  if (status) q.set("status", status);
  if (provider) q.set("provider", provider);
  if ($("f-after").value) q.set("created_after", new Date($("f-after").value).toISOString());
  if ($("f-before").value) q.set("created_before", new Date($("f-before").value).toISOString());
  for (const [k, v] of Object.entries(extra)) q.set(k, v);
  return q;
}

async function list(append = false) {
  const q = query({ limit: "50" });
  if (append && cursor) q.set("cursor", cursor);
  const page = await api(`/v1/uploads?${q}`);
  const rows = itemsOf(page).map((u) => {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "secondary";
    b.textContent = u.id;
    b.dataset.upload = u.id;
    b.addEventListener("click", () => show(u.id));
    td.append(b);
    const status = cell(u.status);
    status.dataset.status = u.status;
    tr.append(td, cell(u.provider), status, cell(when(u.created_at)), cell(u.attempts));
    return tr;
  });
  if (append) $("rows").append(...rows); else $("rows").replaceChildren(...rows);
  cursor = page.next_cursor || null;
  $("more").hidden = !cursor;
}

async function summary() {
  // The last hour, counted from the listing (at most 20 pages of 500).
  const since = new Date(Date.now() - 3600 * 1000).toISOString();
  let after = null;
  const all = [];
  for (let i = 0; i < 20; i += 1) {
    const q = new URLSearchParams({ created_after: since, limit: "500" });
    if (after) q.set("cursor", after);
    const page = await api(`/v1/uploads?${q}`);
    all.push(...itemsOf(page));
    after = page.next_cursor;
    if (!after) break;
  }
  const delivered = all.filter((u) => u.status === "delivered" || u.status === "duplicate");
  const times = delivered
    .filter((u) => u.delivered_at)
    .map((u) => new Date(u.delivered_at) - new Date(u.created_at))
    .sort((a, b) => a - b);
  const p95 = times.length ? times[Math.min(times.length - 1, Math.ceil(times.length * 0.95) - 1)] : null;
  $("sum-accepted").textContent = all.length;
  $("sum-delivered").textContent = delivered.length;
  $("sum-failed").textContent = all.filter((u) => u.status === "failed").length;
  $("sum-p95").textContent = p95 === null ? "–" : `${(p95 / 1000).toFixed(2)} s`;
}

function describe(r) {
  const rows = [["Provider", r.provider], ["Created", when(r.created_at)], ["Attempts", r.attempts],
    ["Delivered", when(r.delivered_at)], ["Last error", r.last_error], ["Erased", when(r.erased_at)]];
  for (const d of r.documents || []) rows.push([`Document ${d.slot}`, `${d.filename || ""} ${d.size} B ${d.media_type || ""} sha256 ${d.sha256}`]);
  $("d-fields").replaceChildren(...rows.filter(([, v]) => v !== undefined && v !== null && v !== "").flatMap(([k, v]) => {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    return [dt, dd];
  }));
}

async function show(id) {
  current = id;
  // Both read before either is shown: the status never runs ahead of the history beside it.
  const r = await api(`/v1/uploads/${encodeURIComponent(id)}`);
  const ev = await api(`/v1/uploads/${encodeURIComponent(id)}/events`);
  const events = ev.events || ev.items || [];
  $("detail").hidden = false;
  $("d-id").textContent = r.id;
  $("d-status").textContent = r.status;
  $("d-status").dataset.status = r.status;
  describe(r);
  $("events").replaceChildren(...events.map((e) => {
    const tr = document.createElement("tr");
    const { at, time, kind, event, ...rest } = e;
    const detail = rest.detail === undefined || rest.detail === null ? "" : JSON.stringify(rest.detail);
    tr.append(cell(when(at || time)), cell(kind || event), cell(detail));
    return tr;
  }));
  $("detail").scrollIntoView({ block: "nearest" });
  // Follow an upload that is still moving (after a retry, say) until it settles.
  clearTimeout(refresh);
  if (!FINAL.has(r.status)) {
    refresh = setTimeout(() => { if (current === id) show(id).catch(() => {}); }, 1000);
  }
}

async function act(what, method, path) {
  if (!current) return;
  try {
    await api(path, { method });
    notice(`${what}: done.`, "done");
  } catch (e) {
    notice(`${what}: ${e.message}`, "error");
  }
  await show(current).catch(() => {});
  await list().catch(() => {});
}

async function connect(ev) {
  ev.preventDefault();
  key = $("api-key").value.trim();
  $("api-key").value = "";
  try {
    const { providers } = await api("/v1/providers");
    const select = $("f-provider");
    select.replaceChildren(new Option("any", ""), ...providers.map((p) => new Option(p.name, p.name)));
    await list();
    await summary();
    $("key-form").hidden = true;
    $("board").hidden = false;
    notice("");
  } catch (e) {
    key = null;
    notice(e.status === 401 ? "That API key was not accepted." : e.message, "error");
  }
}

$("key-form").addEventListener("submit", connect);
$("filters").addEventListener("submit", (ev) => { ev.preventDefault(); cursor = null; list().catch((e) => notice(e.message, "error")); });
$("more").addEventListener("click", () => list(true).catch((e) => notice(e.message, "error")));
$("retry").addEventListener("click", () => act("Retry", "POST", `/v1/uploads/${encodeURIComponent(current)}/retry`));
$("cancel").addEventListener("click", () => act("Cancel", "POST", `/v1/uploads/${encodeURIComponent(current)}/cancel`));
$("erase").addEventListener("click", () => {
  if (confirm("Erase this upload's documents and personal data? This cannot be undone.")) {
    act("Erase", "DELETE", `/v1/uploads/${encodeURIComponent(current)}`);
  }
});
