// Uppy, as teams already use it, pointed at a docgate upload session: the tus plugin speaks
// to docgate's /v1/tus/ with the session's token. Nothing docgate-specific beyond the URL,
// the token and the slot name.
//
// Open index.html#gateway=<docgate URL>&token=<session token>[&slot=<slot>]; the tenant's
// backend minted the session (POST /v1/upload-sessions with its API key).
import Uppy from "@uppy/core";
import Dashboard from "@uppy/dashboard";
import Tus from "@uppy/tus";
import "@uppy/core/css/style.min.css";
import "@uppy/dashboard/css/style.min.css";

const params = new URLSearchParams(location.hash.slice(1));
const gateway = params.get("gateway") || "http://127.0.0.1:8080";
const token = params.get("token");
// The document's slot, when the session takes more than one.
const slot = params.get("slot");

const uppy = new Uppy({ restrictions: { maxNumberOfFiles: 1 }, autoProceed: false })
  .use(Dashboard, { inline: true, target: "#uppy", proudlyDisplayPoweredByUppy: false })
  .use(Tus, {
    endpoint: `${gateway}/v1/tus/`,
    headers: { Authorization: `Bearer ${token}` },
    chunkSize: 1024 * 1024,
    retryDelays: [0, 1000, 3000, 5000],
    allowedMetaFields: slot ? ["name", "type", "slot"] : ["name", "type"],
  });

if (slot) uppy.setMeta({ slot });

uppy.on("complete", (result) => {
  const done = document.getElementById("result");
  done.dataset.successful = String(result.successful.length);
  done.dataset.failed = String(result.failed.length);
  done.textContent = result.failed.length
    ? `Failed: ${result.failed.map((f) => f.error).join("; ")}`
    : `Uploaded ${result.successful.length} file(s); docgate delivers them to the provider.`;
});
