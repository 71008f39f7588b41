// The upload page: reads the session from the link (`#session=<id>&token=<token>`), shows
// the documents and details it needs, uploads each file with tus (resuming after a network
// loss), completes the session and follows the receipt until the provider has it.
import { upload, Refused } from "/assets/tus.js";

const $ = (id) => document.getElementById(id);
const FINAL = new Set(["delivered", "duplicate", "rejected", "failed", "canceled"]);

function notice(text, kind = "") {
  const el = $("notice");
  el.textContent = text;
  el.className = kind;
}

function human(bytes) {
  const units = ["B", "KB", "MB", "GB"];
  let n = bytes;
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function problemText(p) {
  const parts = [p.title, p.detail].filter(Boolean);
  for (const e of p.errors || []) parts.push(`${e.field}: ${e.message}`);
  return parts.join(" — ") || "refused";
}

async function api(path, token, init = {}) {
  const res = await fetch(path, {
    ...init,
    headers: { Authorization: `Bearer ${token}`, ...(init.body ? { "Content-Type": "application/json" } : {}), ...(init.headers || {}) },
  });
  const text = await res.text();
  let body = {};
  try { body = text ? JSON.parse(text) : {}; } catch { body = { detail: text }; }
  return { status: res.status, body };
}

// The session a link names (`#session=…&token=…`) is kept for this tab only, and the token
// taken out of the address at once: left there, it stayed in the page's address (the
// back/forward entry, anything copied or bookmarked later), from where it could read the
// session's fields and receipt until the session expired. (The browser's history may still
// have recorded the link as it was opened; the token's short life bounds that.)
const SESSION_KEY = "docgate:session";

function remember(id, token) {
  try { sessionStorage.setItem(SESSION_KEY, JSON.stringify({ id, token })); } catch { /* storage off: a reload starts over */ }
}

function forget() {
  try { sessionStorage.removeItem(SESSION_KEY); } catch { /* storage off */ }
}

function linkParams() {
  const p = new URLSearchParams(location.hash.replace(/^#/, ""));
  if (p.has("session") || p.has("token")) {
    // A link always wins over what this tab kept, even a broken one.
    forget();
    history.replaceState(null, "", location.pathname + location.search);
    if (!p.get("session") || !p.get("token")) return { id: null, token: null, broken: true };
    remember(p.get("session"), p.get("token"));
    return { id: p.get("session"), token: p.get("token") };
  }
  try {
    const kept = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    if (kept && kept.id && kept.token) return kept;
  } catch { /* nothing kept */ }
  return { id: null, token: null };
}

async function startSandbox() {
  const res = await fetch("/sandbox");
  if (!res.ok) {
    notice("Open this page with the link your service gave you (it names your upload session).", "error");
    return;
  }
  const { providers } = await res.json();
  const select = $("start-provider");
  for (const p of providers) select.add(new Option(p.name, p.name));
  // Providers with named slots: the person picks which documents this session takes.
  const showSlots = () => {
    const p = providers.find((x) => x.name === select.value);
    const named = p && p.slots.kind === "named" ? p.slots.slots : [];
    $("start-slots").replaceChildren(...named.map((slot) => {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.id = `slot-${slot.name}`;
      box.value = slot.name;
      box.checked = slot.required;
      label.append(box, ` ${slot.name.replaceAll("_", " ")}${slot.required ? " (required)" : ""}`);
      return label;
    }));
    $("start-slots-box").hidden = named.length === 0;
  };
  select.addEventListener("change", showSlots);
  showSlots();
  $("start").hidden = false;
  $("start-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { provider: select.value };
    const picked = [...document.querySelectorAll("#start-slots input:checked")].map((b) => b.value);
    if (picked.length) body.slots = picked;
    const r = await fetch("/sandbox/upload-sessions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const s = await r.json();
    if (!r.ok) return notice(problemText(s), "error");
    remember(s.id, s.token);
    $("start").hidden = true;
    await openSession(s.id, s.token);
  });
}

function fieldInput(spec) {
  const wrap = document.createElement("div");
  const label = document.createElement("label");
  label.htmlFor = `field-${spec.name}`;
  label.textContent = spec.name.replaceAll("_", " ");
  const input = document.createElement("input");
  input.type = "text";
  input.id = `field-${spec.name}`;
  input.name = spec.name;
  input.required = true;
  input.autocomplete = "off";
  if (spec.description) {
    const hint = document.createElement("small");
    hint.id = `hint-${spec.name}`;
    hint.className = "muted";
    hint.textContent = spec.description;
    input.setAttribute("aria-describedby", hint.id);
    wrap.append(label, input, hint);
  } else {
    wrap.append(label, input);
  }
  return wrap;
}

function slotBox(slot, accept) {
  const box = document.createElement("div");
  box.className = "slot";
  box.dataset.slot = slot;
  // Built from elements, never from markup: a slot name is data.
  const label = document.createElement("label");
  label.htmlFor = `file-${slot}`;
  label.textContent = `Document: ${slot.replaceAll("_", " ")}`;
  const input = document.createElement("input");
  input.type = "file";
  input.id = `file-${slot}`;
  input.name = slot;
  input.accept = accept;
  const hint = document.createElement("p");
  hint.className = "muted";
  hint.textContent = "Drop a file here or choose one.";
  const chosen = document.createElement("p");
  chosen.className = "file";
  chosen.setAttribute("aria-live", "polite");
  const bar = document.createElement("progress");
  bar.max = 1;
  bar.value = 0;
  bar.hidden = true;
  bar.setAttribute("aria-label", `${slot} upload progress`);
  const error = document.createElement("p");
  error.className = "error";
  error.setAttribute("role", "alert");
  box.append(label, input, hint, chosen, bar, error);
  const show = () => {
    const f = input.files[0];
    chosen.textContent = f ? `${f.name} (${human(f.size)})` : "";
    error.textContent = "";
  };
  input.addEventListener("change", show);
  box.addEventListener("dragover", (e) => { e.preventDefault(); box.classList.add("over"); });
  box.addEventListener("dragleave", () => box.classList.remove("over"));
  box.addEventListener("drop", (e) => {
    e.preventDefault();
    box.classList.remove("over");
    if (e.dataTransfer.files.length) {
      input.files = e.dataTransfer.files;
      show();
    }
  });
  return box;
}

async function openSession(id, token) {
  const { status, body: s } = await api(`/v1/upload-sessions/${encodeURIComponent(id)}`, token);
  if (status !== 200) {
    forget();
    return notice(problemText(s), "error");
  }
  if (s.receipt) return follow(id, token, s.receipt);
  if (s.state !== "open") {
    forget();
    return notice(`This upload session is ${s.state}.`, "error");
  }
  const info = s.provider_info || { fields: [], policy: { accepted: [] } };
  $("provider-name").textContent = s.provider;
  $("provider-description").textContent = info.description || "";
  const needed = new Set(s.fields_needed || []);
  const specs = (info.fields || []).filter((f) => needed.has(f.name));
  for (const name of needed) if (!specs.some((f) => f.name === name)) specs.push({ name });
  $("field-list").replaceChildren(...specs.map(fieldInput));
  $("fields").hidden = specs.length === 0;
  const accept = (info.policy.accepted || []).join(",");
  const done = new Set((s.documents || []).filter((d) => d.state === "complete").map((d) => d.slot));
  $("slots").replaceChildren(...s.slots.filter((slot) => !done.has(slot)).map((slot) => slotBox(slot, accept)));
  const max = Math.min(s.max_bytes || Infinity, info.policy.max_document_bytes || Infinity);
  $("limits").textContent = `Accepted: ${(info.policy.accepted || []).join(", ")}${Number.isFinite(max) ? `; up to ${human(max)} per document` : ""}. Uploads resume by themselves if the connection drops.`;
  $("session").hidden = false;
  $("upload-form").onsubmit = (ev) => { ev.preventDefault(); send(id, token, s, specs); };
}

/** A short digest of a file name, to tell files apart in storage without keeping the name. */
async function nameDigest(name) {
  const bytes = new TextEncoder().encode(name);
  if (globalThis.crypto && crypto.subtle) {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return [...digest.slice(0, 12)].map((b) => b.toString(16).padStart(2, "0")).join("");
  }
  // Not a secure context (no WebCrypto): FNV-1a, enough to tell two names apart.
  let h = 0x811c9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h.toString(16);
}

async function sendSlot(box, token, sessionId) {
  const file = box.querySelector("input").files[0];
  const bar = box.querySelector("progress");
  const text = box.querySelector(".file");
  const slot = box.dataset.slot;
  bar.hidden = false;
  let last = { t: performance.now(), n: 0 };
  let speed = 0;
  await upload(file, {
    endpoint: new URL("/v1/tus/", location.href).href,
    token,
    metadata: { slot, filename: file.name, filetype: file.type || "application/octet-stream" },
    // The file's name only as a digest (salted with the session): an entry left behind
    // would otherwise keep it (personal data) in the browser after the page is gone.
    storageKey: `docgate:${sessionId}:${slot}:${await nameDigest(`${sessionId}:${file.name}`)}:${file.size}:${file.lastModified}`,
    onProgress: (sent, total) => {
      const now = performance.now();
      if (now - last.t > 250) {
        speed = ((sent - last.n) * 1000) / (now - last.t);
        last = { t: now, n: sent };
      }
      bar.max = total || 1;
      bar.value = sent;
      text.textContent = `${file.name}: ${human(sent)} of ${human(total)}${speed > 0 ? ` · ${human(speed)}/s` : ""}`;
    },
    onState: (state) => { if (state !== "sending") notice(state); else notice(""); },
  });
  text.textContent = `${file.name}: ${human(file.size)} received`;
  text.classList.add("done");
}

// Slots whose documents the gateway has (a second try after a field error skips them).
const received = new Set();

async function send(id, token, session, specs) {
  const fields = {};
  for (const spec of specs) {
    const input = $(`field-${spec.name}`);
    if (!input.value.trim()) {
      input.focus();
      return notice(`Please fill in “${spec.name.replaceAll("_", " ")}”.`, "error");
    }
    fields[spec.name] = input.value.trim();
  }
  const boxes = [...document.querySelectorAll(".slot")].filter((b) => !received.has(b.dataset.slot));
  const missing = boxes.find((b) => !b.querySelector("input").files.length);
  if (missing) {
    missing.querySelector("input").focus();
    return notice(`Choose a file for “${missing.dataset.slot}”.`, "error");
  }
  $("send").disabled = true;
  try {
    for (const box of boxes) {
      try {
        await sendSlot(box, token, id);
        received.add(box.dataset.slot);
      } catch (e) {
        box.querySelector(".error").textContent = e instanceof Refused ? problemText(e.problem) : String(e.message || e);
        $("send").disabled = false;
        return notice("A document was refused; nothing else was sent.", "error");
      }
    }
    notice("All documents received; handing them over…");
    const now = await api(`/v1/upload-sessions/${encodeURIComponent(id)}`, token);
    if (now.body.receipt) return follow(id, token, now.body.receipt);
    const done = await api(`/v1/upload-sessions/${encodeURIComponent(id)}/complete`, token, {
      method: "POST",
      headers: { Prefer: "respond-async" },
      body: JSON.stringify({ fields }),
    });
    if (done.body.receipt) return follow(id, token, done.body.receipt);
    if (done.status === 422 && (done.body.errors || []).length) {
      // The provider needs more details (they depend on what was entered): ask for them.
      for (const e of done.body.errors) {
        if (!specs.some((f) => f.name === e.field)) {
          const spec = { name: e.field, description: e.message };
          specs.push(spec);
          $("field-list").append(fieldInput(spec));
        }
      }
      $("fields").hidden = false;
      $("send").disabled = false;
      const first = done.body.errors[0];
      const input = first && $(`field-${first.field}`);
      if (input) input.focus();
      return notice(`Your documents are received. ${problemText(done.body)}`, "error");
    }
    if (done.status >= 400) {
      $("send").disabled = false;
      return notice(problemText(done.body), "error");
    }
    return follow(id, token, done.body);
  } catch (e) {
    $("send").disabled = false;
    notice(String(e.message || e), "error");
  }
}

function showReceipt(r) {
  $("session").hidden = true;
  $("receipt").hidden = false;
  const st = $("receipt-status");
  st.textContent = r.status;
  st.dataset.status = r.status;
  const rows = [["Upload id", r.id], ["Provider", r.provider], ["Attempts", r.attempts]];
  for (const d of r.documents || []) {
    rows.push([`${d.slot}`, `${d.filename || ""} · ${human(d.size)} · ${d.media_type}`]);
    rows.push([`${d.slot} sha256`, d.sha256]);
  }
  if (r.last_error) rows.push(["Last error", r.last_error]);
  if (r.problem) rows.push(["Problem", problemText(r.problem)]);
  $("receipt-details").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v ?? "";
    if (k.endsWith("sha256")) dd.dataset.sha256 = v;
    return [dt, dd];
  }));
}

async function follow(id, token, receipt) {
  showReceipt(receipt);
  notice(FINAL.has(receipt.status) ? "" : "Waiting for the provider…");
  let r = receipt;
  // Polls until the receipt is final; the session (and its token) expire on their own.
  while (!FINAL.has(r.status)) {
    await new Promise((ok) => setTimeout(ok, 1000));
    const got = await api(`/v1/upload-sessions/${encodeURIComponent(id)}`, token);
    if (got.status !== 200) return notice(problemText(got.body), "error");
    if (got.body.receipt) r = got.body.receipt;
    showReceipt(r);
  }
  // Nothing more to do with this session: a reload of the tab starts afresh.
  forget();
  notice(r.status === "delivered" || r.status === "duplicate" ? "Done: the provider has your documents." : "The provider did not take the documents.", r.status === "delivered" || r.status === "duplicate" ? "done" : "error");
}

// Resume entries of an earlier page named the file itself: gone with this one.
for (const key of Object.keys(localStorage)) {
  const parts = key.split(":");
  const current = parts.length === 6 && /^[0-9a-f]+$/.test(parts[3]);
  if (parts[0] === "docgate" && !current) localStorage.removeItem(key);
}

const { id, token, broken } = linkParams();
if (id && token) openSession(id, token);
else if (broken) notice("This link is incomplete: ask for a new one.", "error");
else startSandbox();
