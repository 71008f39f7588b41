#!/usr/bin/env python3
"""An independent GNU Taler kyc-bulk client, run against docgate's Taler emulator.

Nothing here comes from docgate: Ed25519 is libsodium (PyNaCl), SHA-512 is hashlib, GNUnet
Crockford base32 is the standard library's RFC 4648 base32 with the alphabet translated,
the error codes are GNU Taler's own table (taler-util), and HTTP is the standard library's
http.client (no `requests`, so this venv cannot conflict with other providers' pins).

Two modes:
  vectors  VECTORS_JSON BODY_BIN
      recompute every published vector (extern_pub, If-Not-Match, all three payto-hash
      variants' h_payto, signed bytes and signatures) from the inputs.
  exchange URL
      talk to a running emulator. Settings come from the environment:
      TALER_INTEROP_SEED (hex Ed25519 seed of a registered key; a test credential, kept off
      the command line), TALER_INTEROP_PURPOSE, TALER_INTEROP_VARIANT (A|B|C),
      TALER_INTEROP_PAYTO, TALER_INTEROP_SIGNATURE_INVALID, TALER_INTEROP_THIRD_PARTY_UNKNOWN,
      TALER_INTEROP_LIMIT (the emulator's upload limit in bytes).

Prints one JSON object with what was checked; exits 1 with a message on the first mismatch.
"""

import base64
import hashlib
import http.client
import json
import os
import struct
import sys
import time
import urllib.parse

import nacl.signing
from taler.util.taler_error_codes import ErrorCode

RFC4648 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TO_CROCKFORD = str.maketrans(RFC4648, CROCKFORD)


class Mismatch(Exception):
    pass


def expect(what, got, want):
    if got != want:
        raise Mismatch(f"{what}: got {got!r}, want {want!r}")


def crockford(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").translate(TO_CROCKFORD)


def normalized_payto(payto: str) -> str:
    head = payto.split("?", 1)[0]
    prefix = "payto://iban/"
    if head.lower().startswith(prefix):
        iban = head[len(prefix):].split("/")[-1]
        return prefix + iban.upper()
    return head


def h_payto(variant: str, payto: str) -> bytes:
    if variant == "A":
        return hashlib.sha512(payto.encode()).digest()
    if variant == "B":
        return hashlib.sha512(payto.encode() + b"\0").digest()[:32]
    if variant == "C":
        return hashlib.sha512(normalized_payto(payto).encode() + b"\0").digest()[:32]
    raise ValueError(f"unknown variant {variant}")


def signed_bytes(purpose: int, h_body: bytes, hp: bytes) -> bytes:
    return struct.pack(">II", 8 + len(h_body) + len(hp), purpose) + h_body + hp


def sign(seed: bytes, purpose: int, variant: str, body: bytes, payto: str) -> str:
    message = signed_bytes(purpose, hashlib.sha512(body).digest(), h_payto(variant, payto))
    return crockford(nacl.signing.SigningKey(seed).sign(message).signature)


def extern_pub(seed: bytes) -> str:
    return crockford(bytes(nacl.signing.SigningKey(seed).verify_key))


def run_vectors(vectors_path: str, body_path: str) -> dict:
    with open(vectors_path) as f:
        v = json.load(f)
    with open(body_path, "rb") as f:
        body = f.read()
    inputs = v["inputs"]
    seed = bytes.fromhex(inputs["seed_hex"])
    expect("body.bin", body.hex(), inputs["body_hex"])
    expect("extern_pub", extern_pub(seed), v["extern_pub"])
    h_body = hashlib.sha512(body).digest()
    expect("h_body", h_body.hex(), v["h_body_hex"])
    expect("if_not_match", crockford(h_body), v["if_not_match"])
    expect("variant C normalisation", normalized_payto(inputs["payto"]), v["variant_C_normalized_payto"])
    for name, want in v["variants"].items():
        hp = h_payto(name, inputs["payto"])
        expect(f"{name} h_payto", hp.hex(), want["h_payto_hex"])
        expect(f"{name} signed bytes", signed_bytes(inputs["purpose"], h_body, hp).hex(), want["signed_bytes_hex"])
        expect(f"{name} signature", sign(seed, inputs["purpose"], name, body, inputs["payto"]), want["signature"])
    for hex_in, want in v["crockford_encode"].items():
        expect(f"crockford({hex_in})", crockford(bytes.fromhex(hex_in)), want)
    return {"mode": "vectors", "variants": sorted(v["variants"]), "crockford_cases": len(v["crockford_encode"])}


def pdf(n: int, tag: bytes) -> bytes:
    out = bytearray(b"%PDF-1.4\n% docgate interop " + tag + b"\n")
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(tag + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:n])


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


class Exchange:
    def __init__(self, url: str):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.seed = bytes.fromhex(os.environ["TALER_INTEROP_SEED"])
        self.purpose = int(os.environ["TALER_INTEROP_PURPOSE"])
        self.variant = os.environ["TALER_INTEROP_VARIANT"]
        self.payto = os.environ["TALER_INTEROP_PAYTO"]
        self.sig_invalid = int(os.environ["TALER_INTEROP_SIGNATURE_INVALID"])
        self.unknown = int(os.environ["TALER_INTEROP_THIRD_PARTY_UNKNOWN"])
        self.limit = int(os.environ["TALER_INTEROP_LIMIT"])

    def http(self, method, path, body=None, headers=None, chunked=False):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            resp = conn.getresponse()
            return Response(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def path(self, seed: bytes) -> str:
        return f"/kyc-bulk/{extern_pub(seed)}"

    def headers(self, body: bytes, seed=None, purpose=None, if_not_match=None, content_type="application/pdf"):
        seed = seed or self.seed
        return {
            "Taler-Extern-Signature": sign(seed, purpose or self.purpose, self.variant, body, self.payto),
            "Taler-Customer-Payto": self.payto,
            "If-Not-Match": if_not_match or crockford(hashlib.sha512(body).digest()),
            "Content-Type": content_type,
        }

    def post(self, body, headers, seed=None, chunked=False):
        return self.http("POST", self.path(seed or self.seed), body, headers, chunked)

    def expect_error(self, what, response, status, code):
        expect(f"{what} status", response.status, status)
        expect(f"{what} content type", (response.headers.get("Content-Type") or "").split(";")[0], "application/json")
        detail = response.json()
        expect(f"{what} code", detail.get("code"), int(code))
        if not isinstance(detail.get("hint"), str):
            raise Mismatch(f"{what}: ErrorDetail has no hint: {detail}")
        return detail

    def stored_count(self) -> int:
        query = urllib.parse.urlencode({"payto": self.payto})
        r = self.http("GET", f"/__emulator/taler/stored?{query}")
        expect("listing status", r.status, 200)
        return r.json()["count"]

    def upload_with_backoff(self, body: bytes) -> list:
        """What the spec asks of clients: repeat with back-off until it succeeds."""
        statuses = []
        delay = 0.05
        for _ in range(6):
            r = self.post(body, self.headers(body))
            statuses.append(r.status)
            if r.status in (204, 412):
                return statuses
            if r.status < 500:
                raise Mismatch(f"back-off upload got {r.status}: {r.body!r}")
            time.sleep(delay)
            delay *= 2
        raise Mismatch(f"back-off upload never succeeded: {statuses}")

    def run(self) -> dict:
        checked = []
        before = self.stored_count()
        body = pdf(150_000, self.variant.encode())

        # Before the genuine upload: once stored, the same If-Not-Match is a 412 before any
        # body byte is looked at.
        tampered = bytearray(body)
        tampered[1000] ^= 0xFF
        r = self.post(bytes(tampered), self.headers(body))
        self.expect_error("tampered body", r, 400, ErrorCode.GENERIC_PARAMETER_MALFORMED)
        checked.append("400 body is not If-Not-Match")
        expect("nothing stored", self.stored_count(), before)

        r = self.post(body, self.headers(body))
        expect("first upload", r.status, 204)
        expect("204 has no body", r.body, b"")
        checked.append("204 stored")
        r = self.post(body, self.headers(body))
        expect("repeated upload", r.status, 412)
        checked.append("412 already stored")
        expect("stored once", self.stored_count(), before + 1)

        other = pdf(2_000, b"other")
        r = self.post(other, self.headers(other, purpose=self.purpose ^ 1))
        self.expect_error("wrong purpose", r, 403, self.sig_invalid)
        checked.append("403 signature invalid")

        stranger = hashlib.sha256(b"not registered").digest()
        r = self.post(other, self.headers(other, seed=stranger), seed=stranger)
        self.expect_error("unknown key", r, 404, self.unknown)
        checked.append("404 third party unknown")

        r = self.post(iter([other]), self.headers(other), chunked=True)
        self.expect_error("chunked body", r, 411, ErrorCode.GENERIC_PARAMETER_MISSING)
        checked.append("411 length required")

        r = self.post(other, self.headers(other, content_type="text/plain"))
        self.expect_error("text/plain", r, 400, ErrorCode.GENERIC_PARAMETER_MALFORMED)
        checked.append("400 content type")

        # Too large, told by Content-Length alone: no body byte is sent.
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        conn.putrequest("POST", self.path(self.seed))
        for k, v in self.headers(other).items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(self.limit + 1))
        conn.endheaders()
        resp = conn.getresponse()
        expect("oversized status", resp.status, 413)
        detail = json.loads(resp.read())
        expect("oversized code", detail["code"], int(ErrorCode.GENERIC_UPLOAD_EXCEEDS_LIMIT))
        conn.close()
        checked.append("413 from Content-Length")

        r = self.http("PUT", "/__emulator/faults", json.dumps({"fail_next": 2, "fail_status": 500}),
                      {"Content-Type": "application/json"})
        expect("fault control", r.status, 200)
        fresh = pdf(40_000, b"after faults " + self.variant.encode())
        statuses = self.upload_with_backoff(fresh)
        expect("statuses with back-off", statuses, [500, 500, 204])
        checked.append("500 x2 then 204 with back-off")
        expect("stored after back-off", self.stored_count(), before + 2)
        return {"mode": "exchange", "variant": self.variant, "checked": checked}


def main(argv):
    try:
        if len(argv) == 4 and argv[1] == "vectors":
            result = run_vectors(argv[2], argv[3])
        elif len(argv) == 3 and argv[1] == "exchange":
            result = Exchange(argv[2]).run()
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (Mismatch, KeyError, ValueError, http.client.HTTPException, OSError) as e:
        print(f"interop FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
