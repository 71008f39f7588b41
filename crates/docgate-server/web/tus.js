// A small tus 1.0.0 client for the upload page: creation, resumable PATCHes with per-chunk
// sha256 checksums (where the page is a secure context), progress and automatic resumption
// after a network loss. Written for docgate's server; no dependencies.

const VERSION = "1.0.0";

/** A refusal by the gateway: its problem+json, kept whole so the page can show it. */
export class Refused extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

/** The network failed (offline, connection reset): worth trying again. */
class NetworkLoss extends Error {}

function b64(text) {
  const bytes = new TextEncoder().encode(text);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

function metadataHeader(meta) {
  return Object.entries(meta)
    .filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => `${k} ${b64(String(v))}`)
    .join(",");
}

async function sha256Base64(blob) {
  if (!(globalThis.crypto && crypto.subtle)) return null;
  const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  let bin = "";
  for (const b of new Uint8Array(digest)) bin += String.fromCharCode(b);
  return btoa(bin);
}

async function problemOf(text) {
  try {
    return JSON.parse(text);
  } catch {
    return { detail: text };
  }
}

/** One request through XMLHttpRequest (fetch has no upload progress). */
function send(method, url, headers, body, onSent, signal) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    if (onSent && xhr.upload) xhr.upload.onprogress = (e) => onSent(e.loaded);
    xhr.onload = () => resolve(xhr);
    xhr.onerror = () => reject(new NetworkLoss("the network failed"));
    xhr.ontimeout = () => reject(new NetworkLoss("the request timed out"));
    xhr.onabort = () => reject(new DOMException("aborted", "AbortError"));
    if (signal) {
      if (signal.aborted) return xhr.abort();
      signal.addEventListener("abort", () => xhr.abort(), { once: true });
    }
    xhr.send(body);
  });
}

/** Wait `ms`, or less when the browser says it is back online. */
function pause(ms, signal) {
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      removeEventListener("online", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    addEventListener("online", done);
    if (signal) signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")), { once: true });
  });
}

/**
 * Upload `file` with the session `token`. Options: `endpoint` (the tus URL), `metadata`,
 * `chunkSize`, `storageKey` (remembers the upload URL so a reload resumes),
 * `onProgress(sent, total)`, `onState(text)`, `signal`. Resolves with the upload URL.
 */
export async function upload(file, opts) {
  try {
    return await uploadOnce(file, opts);
  } catch (e) {
    // Refused for good (the document or the request is wrong): nothing to resume, so
    // nothing to keep. Not for a refusal that may pass later (busy, rate-limited, a lock,
    // a token to renew): the upload resumes from where it stood.
    if (e instanceof Refused && opts.storageKey && isFinal(e.status)) localStorage.removeItem(opts.storageKey);
    throw e;
  }
}

function isFinal(status) {
  return status >= 400 && status < 500 && ![401, 408, 409, 423, 429].includes(status);
}

async function uploadOnce(file, opts) {
  const auth = { Authorization: `Bearer ${opts.token}`, "Tus-Resumable": VERSION };
  const chunkSize = opts.chunkSize || 2 * 1024 * 1024;
  const onState = opts.onState || (() => {});
  let url = opts.storageKey ? localStorage.getItem(opts.storageKey) : null;
  let offset = null;
  let failures = 0;

  const create = async () => {
    const xhr = await send("POST", opts.endpoint, {
      ...auth,
      "Upload-Length": String(file.size),
      "Upload-Metadata": metadataHeader(opts.metadata || {}),
    }, null, null, opts.signal);
    if (xhr.status !== 201) throw new Refused(xhr.status, await problemOf(xhr.responseText));
    url = new URL(xhr.getResponseHeader("Location"), opts.endpoint).href;
    if (opts.storageKey) localStorage.setItem(opts.storageKey, url);
    return Number(xhr.getResponseHeader("Upload-Offset") || 0);
  };

  const head = async () => {
    const xhr = await send("HEAD", url, auth, null, null, opts.signal);
    if (xhr.status === 200 || xhr.status === 204) return Number(xhr.getResponseHeader("Upload-Offset"));
    if (xhr.status === 404 || xhr.status === 410) return null; // gone: start again
    throw new Refused(xhr.status, await problemOf(xhr.responseText));
  };

  for (;;) {
    try {
      if (offset === null) {
        offset = url ? await head() : null;
        if (offset === null) offset = await create();
      }
      opts.onProgress && opts.onProgress(offset, file.size);
      if (offset >= file.size) break;
      const chunk = file.slice(offset, Math.min(offset + chunkSize, file.size));
      const headers = { ...auth, "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream" };
      const sum = await sha256Base64(chunk);
      if (sum) headers["Upload-Checksum"] = `sha256 ${sum}`;
      const base = offset;
      onState("sending");
      const xhr = await send("PATCH", url, headers, chunk, (n) => opts.onProgress && opts.onProgress(base + n, file.size), opts.signal);
      if (xhr.status === 204) {
        offset = Number(xhr.getResponseHeader("Upload-Offset"));
        failures = 0;
        continue;
      }
      const problem = await problemOf(xhr.responseText);
      // Worth another try: the server is busy or the previous PATCH still holds the lock,
      // the offsets disagree, or a checksum failed on the way.
      if ([409, 423, 460, 502, 503, 504].includes(xhr.status) || xhr.status >= 500) {
        throw new NetworkLoss(problem.detail || `HTTP ${xhr.status}`);
      }
      if (xhr.status === 404 || xhr.status === 410) {
        url = null;
        offset = null;
        continue;
      }
      throw new Refused(xhr.status, problem);
    } catch (e) {
      if (!(e instanceof NetworkLoss)) throw e;
      failures += 1;
      offset = null; // ask the server where it stands
      const wait = Math.min(10000, 500 * 2 ** Math.min(failures - 1, 5));
      onState(`connection lost; resuming (try ${failures})`);
      await pause(wait, opts.signal);
    }
  }
  if (opts.storageKey) localStorage.removeItem(opts.storageKey);
  return url;
}
