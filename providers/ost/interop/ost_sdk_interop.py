"""Drive `docgate emulate ost` with OST's own Python SDK (ost-kyc-sdk-python).

Nobody here wrote that SDK, so if its signatures, its query encoding and its idea of the
answers are accepted by the emulator, the emulator speaks OST. The upload itself goes to the
URL the emulator handed out, straight into the emulator's S3, with plain `requests`: S3 checks
the SigV4 signature, the signed Content-Type and the expiry.

Usage: ost_sdk_interop.py BASE_URL API_KEY API_SECRET JPEG_FILE PDF_FILE
Prints one JSON object (user id, S3 keys, statuses) on the last line; exits non-zero with a
message on the first thing that is not as OST would have it.
"""

import json
import os
import sys
import uuid

import requests
import ost_kyc_sdk_python


def check(condition, what, answer=None):
    if not condition:
        detail = "" if answer is None else ": " + json.dumps(answer, default=str)[:2000]
        sys.exit("interop check failed: " + what + detail)


def sdk(base_url, api_key, api_secret):
    return ost_kyc_sdk_python.Services({
        "api_key": api_key,
        "api_secret": api_secret,
        "api_base_url": base_url,
        "config": {"timeout": 15},
    }).services


def main():
    base_url, api_key, api_secret, jpeg_path, pdf_path = sys.argv[1:6]
    services = sdk(base_url, api_key, api_secret)
    result = {}

    # A user, as OST's signup would make one.
    email = "interop-%s@example.com" % uuid.uuid4().hex[:12]
    created = services.users.create({"email": email})
    check(created.get("success") is True, "users.create", created)
    user_id = created["data"]["user"]["id"]
    result["user_id"] = user_id

    # Presigned PUT URLs for three documents.
    files = {
        "document_id": "image/jpeg",
        "selfie": "image/jpeg",
        "residence_proof": "application/pdf",
    }
    answer = services.users_kyc.get_pre_signed_url_put({"files": dict(files)})
    check(answer.get("success") is True, "get_pre_signed_url_put", answer)
    targets = answer["data"]["file_upload_put"]
    check(sorted(targets) == sorted(files), "one URL per requested slot", answer)

    paths = {"document_id": jpeg_path, "selfie": jpeg_path, "residence_proof": pdf_path}
    keys = {}
    for slot, content_type in files.items():
        url = targets[slot]["url"]
        with open(paths[slot], "rb") as body:
            put = requests.put(url, data=body, headers={"Content-Type": content_type}, timeout=30)
        check(put.status_code == 200, "PUT %s to S3 (got %d: %s)" % (slot, put.status_code, put.text[:300]))
        keys[slot] = targets[slot]["fields"]["key"]
    result["keys"] = keys

    # S3 checks the signed Content-Type: the same URL with another type is refused.
    with open(jpeg_path, "rb") as body:
        wrong = requests.put(targets["selfie"]["url"], data=body,
                             headers={"Content-Type": "image/png"}, timeout=30)
    check(400 <= wrong.status_code < 500, "a PUT with an unsigned Content-Type is refused (got %d)" % wrong.status_code)
    result["wrong_type_status"] = wrong.status_code

    # Submit the KYC details with the keys as file paths (the spec's example values).
    details = {
        "first_name": "aniket",
        "last_name": "ayachit",
        "birthdate": "21/12/1991",
        "country": "india",
        "nationality": "indian",
        "document_id_number": "arqpa7659a",
        "document_id_file_path": keys["document_id"],
        "selfie_file_path": keys["selfie"],
        "residence_proof_file_path": keys["residence_proof"],
        "ethereum_address": "0xdfbc84ccac430f2c0455c437adf417095d7ad68e",
        "estimated_participation_amount": "2",
        "street_address": "afawfveav ",
        "city": "afawfveav",
        "state": "afawfveav",
        "postal_code": "afawfveav",
    }
    submitted = services.users_kyc.submit_kyc(dict(details, user_id=user_id))
    check(submitted.get("success") is True, "submit_kyc", submitted)
    check(submitted["data"]["user_kyc"]["user_id"] == user_id, "submit_kyc names the user", submitted)

    status = services.users_kyc.get({"user_id": user_id})
    check(status.get("success") is True, "users_kyc.get", status)
    result["submission_count"] = status["data"]["user_kyc"]["submission_count"]

    # A base URL with a trailing slash makes the SDK request `//api/v2/...`; still accepted.
    slash = sdk(base_url + "/", api_key, api_secret)
    again = slash.users_kyc.get({"user_id": user_id})
    check(again.get("success") is True, "a base URL ending in / works", again)

    # A key that does not exist in the bucket is refused with OST's envelope, naming the field.
    missing = "4/i/" + "0" * 32
    bogus = services.users_kyc.submit_kyc(dict(details, user_id=user_id, document_id_file_path=missing))
    check(bogus.get("success") is False and bogus["err"]["code"] == "BAD_REQUEST",
          "a submission naming a missing file is refused", bogus)
    check([e["parameter"] for e in bogus["err"]["error_data"]] == ["document_id_file_path"],
          "the refusal names only the missing file", bogus)
    result["missing_file_error"] = bogus["err"]["error_data"]

    # Wrong secret: OST's 401 envelope, which the SDK hands back as is.
    forged = sdk(base_url, api_key, "0" * 32).users_kyc.get_pre_signed_url_put({"files": {"selfie": "image/jpeg"}})
    check(forged.get("success") is False and forged["err"]["code"] == "UNAUTHORIZED",
          "a wrong secret is refused", forged)

    # Browser-style upload: a presigned POST form, posted straight to S3.
    form = services.users_kyc.get_pre_signed_url_post({"files": {"residence_proof": "application/pdf"}})
    check(form.get("success") is True, "get_pre_signed_url_post", form)
    target = form["data"]["file_upload_post"]["residence_proof"]
    with open(pdf_path, "rb") as body:
        posted = requests.post(target["url"], data=target["fields"],
                               files={"file": (os.path.basename(pdf_path), body, "application/pdf")},
                               timeout=30)
    check(200 <= posted.status_code < 300, "POST form upload (got %d: %s)" % (posted.status_code, posted.text[:300]))
    result["post_key"] = target["fields"]["key"]

    print(json.dumps(result))


if __name__ == "__main__":
    main()
