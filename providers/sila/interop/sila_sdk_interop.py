#!/usr/bin/env python3
"""Drive the real Sila Python SDK (silasdk, from PyPI) against docgate's Sila emulator.

The SDK is used unmodified. It has no base-URL option, so -- as its own design allows --
the module-level ``endPoints`` table is pointed at the emulator before ``App()`` is built.
The only other hook is a wrapper around ``requests.post`` and ``requests.Session.post`` that
*records* HTTP status codes: the SDK's upload and get calls return just the JSON body on a
refusal, and a refusal must be checked for Sila's status as well as its envelope.

Checks, each must hold or the script exits non-zero:
  * ``App()`` starts (it fetches five message templates from /0.2/getmessage);
  * ``listSupportedDocuments`` pages the document types;
  * ``uploadDocument`` (one PNG) and ``uploadDocuments`` (PNG + PDF) succeed;
  * tampered uploads are refused with Sila's status and envelope: a hash that is not the
    file's (400), a signature by an unregistered user key (403), a PNG declared as a PDF
    (400) and an unknown document type (400);
  * ``listDocuments`` lists exactly the three uploaded documents, and with filters
    (``doc_types``, ``search``, dates, ``sort_by``) plus page/per_page/order pages them;
  * ``getDocument`` returns each uploaded file byte-identical with its Content-Type, and is
    refused for an unknown id (404) and for an unregistered user key (403).

Usage: sila_sdk_interop.py --base-url http://127.0.0.1:PORT --fixtures DIR
(DIR holds red1x1.png and tiny.pdf). Prints one JSON line per check.
"""

import argparse
import datetime
import hashlib
import json
import sys

import requests

APP_HANDLE = "test_app.silamoney.eth"
USER_HANDLE = "test_user.silamoney.eth"
# The public test keys from the project notes (registered in the emulator by default).
APP_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
USER_KEY = "0x8da4ef21b864d2cc526dbdb2a120bd2874c36c9d0a1fb7f8c63d7f7a8b41de8f"
# A valid secp256k1 key that nobody registered.
STRANGER_KEY = "0x" + "11" * 32

STATUSES = []
_original_post = requests.post


def _recording_post(*args, **kwargs):
    response = _original_post(*args, **kwargs)
    STATUSES.append(response.status_code)
    return response


requests.post = _recording_post

_original_session_post = requests.Session.post


def _recording_session_post(self, *args, **kwargs):
    response = _original_session_post(self, *args, **kwargs)
    STATUSES.append(response.status_code)
    return response


requests.Session.post = _recording_session_post

FAILED = []


def check(name, condition, detail):
    print(json.dumps({"check": name, "ok": bool(condition), "detail": detail}, default=str))
    if not condition:
        FAILED.append(name)


def is_failure_envelope(body):
    return (
        isinstance(body, dict)
        and body.get("success") is False
        and body.get("status") == "FAILURE"
        and isinstance(body.get("message"), str)
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--fixtures", required=True)
    args = parser.parse_args()
    base = args.base_url.rstrip("/")

    import silasdk
    from silasdk.endpoints import endPoints

    endPoints["schemaUrl"] = base + "/0.2/getmessage?emptymessage=%sTestMessage"
    endPoints["apiUrl"] = base + "/0.2%.0s"  # '%.0s' swallows the tier name
    app = silasdk.App("SANDBOX", APP_KEY, APP_HANDLE)
    check("app_init", True, "App() fetched its five message templates")

    with open(f"{args.fixtures}/red1x1.png", "rb") as f:
        png = f.read()
    with open(f"{args.fixtures}/tiny.pdf", "rb") as f:
        pdf = f.read()

    types = silasdk.Documents.listSupportedDocuments(app, 1, 100)
    names = [t.get("name") for t in types.get("document_types", [])]
    check(
        "list_supported_documents",
        types.get("success") is True
        and types.get("status_code") == 200
        and "id_drivers_license" in names
        and types.get("pagination", {}).get("total_count") == len(names),
        {"count": len(names), "pagination": types.get("pagination")},
    )
    paged = silasdk.Documents.listSupportedDocuments(app, 2, 7)
    check(
        "list_supported_documents_paged",
        paged.get("success") is True
        and len(paged.get("document_types", [])) == 7
        and paged.get("pagination", {}).get("current_page") == 2,
        paged.get("pagination"),
    )

    single = silasdk.Documents.uploadDocument(
        app,
        {
            "user_handle": USER_HANDLE,
            "filename": "red1x1",
            "hash": hashlib.sha256(png).hexdigest(),
            "mime_type": "image/png",
            "document_type": "id_drivers_license",
            "name": "Driver's license",
            "description": "front side",
        },
        png,
        USER_KEY,
    )
    check(
        "upload_document",
        STATUSES[-1] == 200
        and single.get("success") is True
        and single.get("status") == "SUCCESS"
        and isinstance(single.get("document_id"), str),
        single,
    )

    multi = silasdk.Documents.uploadDocuments(
        app,
        {
            "user_handle": USER_HANDLE,
            "file_metadata": {
                "file_1": {
                    "filename": "red1x1",
                    "hash": hashlib.sha256(png).hexdigest(),
                    "mime_type": "image/png",
                    "document_type": "id_drivers_license",
                    "identity_type": "license",
                    "name": "license front",
                },
                "file_2": {
                    "filename": "tiny",
                    "hash": hashlib.sha256(pdf).hexdigest(),
                    "mime_type": "application/pdf",
                    "document_type": "doc_green_card",
                    "identity_type": "other",
                },
            },
        },
        {"file_1": png, "file_2": pdf},
        USER_KEY,
    )
    ids = multi.get("document_id")
    check(
        "upload_documents",
        STATUSES[-1] == 200
        and multi.get("success") is True
        and isinstance(ids, list)
        and len(ids) == 2
        and len(set(ids)) == 2,
        multi,
    )

    def single_payload(**overrides):
        payload = {
            "user_handle": USER_HANDLE,
            "filename": "red1x1",
            "hash": hashlib.sha256(png).hexdigest(),
            "mime_type": "image/png",
            "document_type": "id_drivers_license",
        }
        payload.update(overrides)
        return payload

    tampered = silasdk.Documents.uploadDocument(
        app, single_payload(hash=hashlib.sha256(png + b"tampered").hexdigest()), png, USER_KEY
    )
    check(
        "tampered_hash_is_refused",
        STATUSES[-1] == 400
        and is_failure_envelope(tampered)
        and "hash" in (tampered.get("validation_details") or {}),
        {"http_status": STATUSES[-1], "body": tampered},
    )

    stranger = silasdk.Documents.uploadDocument(app, single_payload(), png, STRANGER_KEY)
    check(
        "unregistered_user_key_is_refused",
        STATUSES[-1] == 403 and is_failure_envelope(stranger),
        {"http_status": STATUSES[-1], "body": stranger},
    )

    disguised = silasdk.Documents.uploadDocument(
        app, single_payload(mime_type="application/pdf"), png, USER_KEY
    )
    check(
        "png_declared_as_pdf_is_refused",
        STATUSES[-1] == 400
        and is_failure_envelope(disguised)
        and "mime_type" in (disguised.get("validation_details") or {}),
        {"http_status": STATUSES[-1], "body": disguised},
    )

    unknown_type = silasdk.Documents.uploadDocument(
        app, single_payload(document_type="id_library_card"), png, USER_KEY
    )
    check(
        "unknown_document_type_is_refused",
        STATUSES[-1] == 400
        and is_failure_envelope(unknown_type)
        and "document_type" in (unknown_type.get("validation_details") or {}),
        {"http_status": STATUSES[-1], "body": unknown_type},
    )

    uploaded = {
        single.get("document_id"): ("image/png", png),
        ids[0]: ("image/png", png),
        ids[1]: ("application/pdf", pdf),
    }
    check_listing(silasdk, app, uploaded)
    check_retrieval(silasdk, app, uploaded)

    if FAILED:
        print(json.dumps({"failed": FAILED}), file=sys.stderr)
        return 1
    print(json.dumps({"result": "all checks passed"}))
    return 0


def check_listing(silasdk, app, uploaded):
    everything = silasdk.Documents.listDocuments(app, {"user_handle": USER_HANDLE}, USER_KEY)
    listed = {d.get("document_id") for d in everything.get("documents", [])}
    check(
        "list_documents",
        everything.get("status_code") == 200
        and everything.get("success") is True
        and listed == set(uploaded)
        and everything.get("pagination", {}).get("total_count") == len(uploaded),
        everything,
    )

    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    # Both PNGs are driver's licences named "Driver's license" and "license front"; sorted
    # by name, descending, one per page: page 1 holds "license front", and there are 2 pages.
    filtered = silasdk.Documents.listDocuments(
        app,
        {
            "user_handle": USER_HANDLE,
            "start_date": today,
            "end_date": today,
            "doc_types": ["id_drivers_license"],
            "search": "license",
            "sort_by": "name",
        },
        USER_KEY,
        1,
        1,
        "desc",
    )
    docs = filtered.get("documents", [])
    check(
        "list_documents_filtered_sorted_paged",
        filtered.get("status_code") == 200
        and len(docs) == 1
        and docs[0].get("name") == "license front"
        and docs[0].get("type") == "id_drivers_license"
        and filtered.get("pagination", {}).get("total_count") == 2
        and filtered.get("pagination", {}).get("total_pages") == 2,
        filtered,
    )


def check_retrieval(silasdk, app, uploaded):
    for number, (document_id, (mime, content)) in enumerate(uploaded.items(), start=1):
        got = silasdk.Documents.getDocument(
            app, {"user_handle": USER_HANDLE, "document_id": document_id}, USER_KEY
        )
        check(
            f"get_document_{number}_{mime.split('/')[1]}",
            got.get("status_code") == 200
            and got.get("headers", {}).get("Content-Type") == mime
            and got.get("headers", {}).get("Content-Length") == str(len(content))
            and got.get("content") == content,
            {k: v for k, v in got.items() if k != "content"},
        )

    unknown = silasdk.Documents.getDocument(
        app, {"user_handle": USER_HANDLE, "document_id": "00000000-0000-4000-8000-000000000000"},
        USER_KEY,
    )
    check(
        "get_unknown_document_is_refused",
        STATUSES[-1] == 404 and is_failure_envelope(unknown),
        {"http_status": STATUSES[-1], "body": unknown},
    )

    some_id = next(iter(uploaded))
    stranger = silasdk.Documents.getDocument(
        app, {"user_handle": USER_HANDLE, "document_id": some_id}, STRANGER_KEY
    )
    check(
        "get_document_with_unregistered_key_is_refused",
        STATUSES[-1] == 403 and is_failure_envelope(stranger),
        {"http_status": STATUSES[-1], "body": stranger},
    )


if __name__ == "__main__":
    sys.exit(main())
