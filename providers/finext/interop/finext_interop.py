#!/usr/bin/env python3
"""Interop check for docgate's Finext emulator and client, from an independent implementation.

Finext publishes no SDK, so this is a Finext client written in Python from the provider's
documentation alone (hashlib for the MD5 sign, base64 and json from the standard library,
`requests` from PyPI for HTTP). It never imports or calls docgate code.

Two modes, both driven by tests/interop.rs:

  client       talk to a running emulator: valid submissions on every endpoint (JSON bodies,
               a chunked streaming body, PHP-style escaped slashes) must be accepted, and a
               replay, a wrong sign and a stale timestamp refused with the documented codes.
  verify-body  check a request body that docgate's own client produced (captured to a file):
               it must parse as JSON, carry a correct sign, and decode to the expected files.

Inputs come from environment variables (credentials never go on a command line):
  FINEXT_URL, FINEXT_API_KEY, FINEXT_SECRET, FINEXT_AUTHORIZATION, FINEXT_DOCS_DIR, and for
  verify-body FINEXT_BODY_FILE. The last line printed is a JSON summary; exit status 0 means
  every check passed.
"""

import base64
import datetime
import hashlib
import json
import os
import sys
import time
import uuid

import requests

DOC_VECTORS = [
    # (api_key, username, timestamp, secret, request_id, sign) from the provider's docs
    ("fd01a53d7834b06c080cd1024ae9c60a", "lili111", "1682073075988",
     "16388ce4331b35e8e0d32777ba57d7d9", "45242f41f20b456092d1b48caa76ce13",
     "aeb294ad0e59e34dfae4885b26b848ee"),
    ("fd01a53d7834b06c080cd1024ae9c60a", "lili1", "1682072257009",
     "16388ce4331b35e8e0d32777ba57d7d9", "5737eb4809b846e48ad15d4b8f97d98c",
     "6f411a001e7a15802acc4a8d6b2d51e5"),
    ("fd01a53d7834b06c080cd1024ae9c60a", "lili111", "1682074028258",
     "16388ce4331b35e8e0d32777ba57d7d9", "48dde322bf7a4ea7bf928a2996744840",
     "400407149060322023134bb9070274ef"),
]


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def sign(api_key, username, timestamp, secret, request_id):
    text = api_key + username + timestamp + secret + request_id
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def env(name):
    value = os.environ.get(name)
    if not value:
        raise Failure(f"environment variable {name} is not set")
    return value


def iso_days_ago(days):
    return (datetime.datetime.now(datetime.timezone.utc).date() - datetime.timedelta(days=days)).isoformat()


def read_doc(name):
    with open(os.path.join(env("FINEXT_DOCS_DIR"), name), "rb") as f:
        return f.read()


class Client:
    def __init__(self):
        self.url = env("FINEXT_URL").rstrip("/")
        self.api_key = env("FINEXT_API_KEY")
        self.secret = env("FINEXT_SECRET")
        self.authorization = env("FINEXT_AUTHORIZATION")
        self.session = requests.Session()

    def signed(self, username, fields, timestamp=None, request_id=None):
        request_id = request_id or uuid.uuid4().hex
        timestamp = timestamp or str(int(time.time() * 1000))
        body = {
            "api_key": self.api_key,
            "request_id": request_id,
            "timestamp": timestamp,
            "username": username,
        }
        body.update(fields)
        body["sign"] = sign(self.api_key, username, timestamp, self.secret, request_id)
        return body

    def post(self, endpoint, data, content_type="application/json"):
        response = self.session.post(
            f"{self.url}/api/v1/account/{endpoint}",
            data=data,
            headers={"authorization": self.authorization, "content-type": content_type},
            timeout=60,
        )
        try:
            return response.status_code, response.json()
        except ValueError as e:
            raise Failure(f"{endpoint}: HTTP {response.status_code}, not JSON: {response.text[:200]!r}") from e

    def post_json(self, endpoint, body):
        return self.post(endpoint, json.dumps(body).encode("utf-8"))

    def expect(self, what, endpoint, body, code, raw=None):
        status, answer = self.post(endpoint, raw) if raw is not None else self.post_json(endpoint, body)
        check(answer.get("code") == code, f"{what}: expected code {code}, got HTTP {status} {answer}")
        return answer


def client_mode():
    for api_key, username, ts, secret, rid, expected in DOC_VECTORS:
        check(sign(api_key, username, ts, secret, rid) == expected, f"docs vector {rid} does not verify")

    c = Client()
    user = "py_" + uuid.uuid4().hex[:8]
    front, back, passport = read_doc("front.jpg"), read_doc("back.png"), read_doc("passport.pdf")
    b64 = lambda data: base64.b64encode(data).decode("ascii")  # noqa: E731

    address = {
        "address_type": "Utility Bill",
        "address_issued_by": "Python Water Works",
        "address_issued_date": iso_days_ago(5),
        "address_language": "English",
        "address_proof_front": b64(front),
        "address_proof_front_extension": "jpeg",
        "address_proof_back": b64(back),
        "address_proof_back_extension": "png",
    }
    status = c.expect("status before any submission", "getAddressKycStatus", c.signed(user, {}), 10200)
    check(status.get("data", {}).get("status") == 0, f"status before: {status}")

    first = c.signed(user, address)
    first_bytes = json.dumps(first).encode("utf-8")
    c.expect("addAddressProof", "addAddressProof", None, 10200, raw=first_bytes)
    status = c.expect("status after submission", "getAddressKycStatus", c.signed(user, {}), 10200)
    check(status.get("data", {}).get("status") == 1, f"status after: {status}")

    c.expect("replayed addAddressProof", "addAddressProof", None, 10403, raw=first_bytes)
    wrong = c.signed(user, address)
    wrong["sign"] = "0" * 32
    c.expect("wrong sign", "addAddressProof", wrong, 10401)
    stale = c.signed(user, address, timestamp=str(int(time.time() * 1000) - 120_000))
    c.expect("stale timestamp", "addAddressProof", stale, 10402)

    c.expect("addIDProof (Passport, front only)", "addIDProof", c.signed(user, {
        "id_type": "Passport",
        "id_number": "PY1234567",
        "issued_by": "GB",
        "issued_date": iso_days_ago(700),
        "expiration_date": iso_days_ago(-2000),
        "language": "English",
        "id_front": b64(passport),
        "id_front_extension": "pdf",
    }), 10200)

    # PHP's json_encode escapes every slash; that is still the same JSON.
    update = c.signed(user, {k: v for k, v in address.items() if not k.startswith("address_proof_back")})
    escaped = json.dumps(update).replace("/", "\\/").encode("utf-8")
    c.expect("updateAddressProof with escaped slashes", "updateAddressProof", None, 10200, raw=escaped)

    # A generator body makes requests stream it with Transfer-Encoding: chunked (no length).
    streamed = json.dumps(c.signed(user, address)).encode("utf-8")
    chunks = (streamed[i:i + 7001] for i in range(0, len(streamed), 7001))
    c.expect("chunked addAddressProof", "addAddressProof", None, 10200, raw=chunks)

    return {
        "mode": "client",
        "username": user,
        "accepted": 4,
        "sha256": {
            "front.jpg": hashlib.sha256(front).hexdigest(),
            "back.png": hashlib.sha256(back).hexdigest(),
            "passport.pdf": hashlib.sha256(passport).hexdigest(),
        },
    }


def verify_body_mode():
    api_key, secret = env("FINEXT_API_KEY"), env("FINEXT_SECRET")
    with open(env("FINEXT_BODY_FILE"), "rb") as f:
        raw = f.read()

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        check(len(keys) == len(set(keys)), f"duplicate keys in {keys}")
        return dict(pairs)

    body = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    for field in ("api_key", "request_id", "timestamp", "username", "sign"):
        check(isinstance(body.get(field), str) and body[field], f"{field} missing or not a string")
    check(body["api_key"] == api_key, "api_key differs")
    check(len(body["timestamp"]) == 13 and body["timestamp"].isdigit(), "timestamp is not 13 digits")
    check(abs(int(body["timestamp"]) - time.time() * 1000) < 60_000, "timestamp is not current")
    check(20 <= len(body["request_id"]) <= 64, "request_id length")
    expected = sign(api_key, body["username"], body["timestamp"], secret, body["request_id"])
    check(body["sign"] == expected, "sign does not verify")
    decoded = {}
    for field in ("address_proof_front", "address_proof_back", "id_front", "id_back"):
        if field in body:
            data = base64.b64decode(body[field], validate=True)
            check(f"{field}_extension" in body, f"{field}_extension missing")
            decoded[field] = {
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "extension": body[f"{field}_extension"],
            }
    check(decoded, "no document fields")
    fields = {k: v for k, v in body.items() if k not in decoded and not k.endswith("_extension")}
    return {"mode": "verify-body", "documents": decoded, "fields": fields, "body_bytes": len(raw)}


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "client"
    try:
        summary = {"client": client_mode, "verify-body": verify_body_mode}[mode]()
    except KeyError:
        print(f"unknown mode {mode!r} (client | verify-body)", file=sys.stderr)
        return 2
    except Failure as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    summary["requests_version"] = requests.__version__
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
