// A real tus client (tus-js-client, from npm) against docgate: upload a file with a session
// token, cut the upload mid-way, resume it from the server's offset, then complete the
// session. Prints one JSON line: what happened, for the Rust test to check.
//
// usage: node tus_upload.mjs <gateway url> <session id> <token> <file> [chunk bytes]
import { readFileSync } from "node:fs";
import { Upload } from "tus-js-client";

const [gateway, sessionId, token, path, chunkArg] = process.argv.slice(2);
const chunkSize = Number(chunkArg ?? 1024 * 1024);
const file = readFileSync(path);
const headers = { Authorization: `Bearer ${token}` };

function start(uploadUrl, stopAfter) {
  return new Promise((resolve, reject) => {
    let upload;
    const options = {
      endpoint: `${gateway}/v1/tus/`,
      uploadUrl,
      headers,
      chunkSize,
      retryDelays: [],
      metadata: { filename: "passport.pdf", filetype: "application/pdf" },
      onError: reject,
      onSuccess: () => resolve({ url: upload.url, done: true, offset: file.length }),
      onProgress: (sent) => {
        if (stopAfter !== undefined && sent >= stopAfter) {
          upload.abort().then(() => resolve({ url: upload.url, done: false, offset: sent }));
        }
      },
    };
    upload = new Upload(file, options);
    upload.start();
  });
}

const first = await start(undefined, Math.floor(file.length * 0.6));
// Where did the server get to? tus-js-client asks it (HEAD) when resuming from uploadUrl.
const head = await fetch(first.url, { method: "HEAD", headers: { ...headers, "Tus-Resumable": "1.0.0" } });
const serverOffset = Number(head.headers.get("upload-offset"));
const second = await start(first.url);
const complete = await fetch(`${gateway}/v1/upload-sessions/${sessionId}/complete`, {
  method: "POST",
  headers,
});
const receipt = await complete.json();
console.log(JSON.stringify({
  cut_at: first.offset,
  server_offset_after_cut: serverOffset,
  finished: second.done,
  complete_status: complete.status,
  receipt,
}));
