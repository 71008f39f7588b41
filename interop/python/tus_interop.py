"""tuspy (the Python tus client, from PyPI) against docgate: create an upload with a session
token, send it in chunks with the checksum extension (sha1), then terminate another upload.
Prints one JSON line for the Rust test to check.

usage: python tus_interop.py <gateway url> <session token> <file>
"""
import json
import sys

import requests
from tusclient import client

gateway, token, path = sys.argv[1:4]
headers = {"Authorization": f"Bearer {token}"}
tus = client.TusClient(f"{gateway}/v1/tus/", headers=headers)

uploader = tus.uploader(
    path,
    chunk_size=256 * 1024,
    metadata={"slot": "statement", "filename": "statement.pdf", "filetype": "application/pdf"},
    upload_checksum=True,
    retries=0,
)
uploader.upload()
head = requests.head(uploader.url, headers={**headers, "Tus-Resumable": "1.0.0"})

# A second upload, for the session's other slot, ended by the termination extension (tuspy
# has no call for it: the extension is a plain DELETE).
other = tus.uploader(path, chunk_size=256 * 1024, metadata={"slot": "spare"}, retries=0)
created = other.create_url()
terminated = requests.delete(created, headers={**headers, "Tus-Resumable": "1.0.0"}).status_code
after = requests.head(created, headers={**headers, "Tus-Resumable": "1.0.0"}).status_code

print(json.dumps({
    "url": uploader.url,
    "offset": int(head.headers.get("Upload-Offset", -1)),
    "length": int(head.headers.get("Upload-Length", -1)),
    "second_upload": created,
    "terminated_status": terminated,
    "head_after_termination": after,
}))
