"""Drive `docgate emulate ost` with OST's own Python SDK (ost-kyc-sdk-python).

Nobody here wrote that SDK, so if its signatures, its query encoding and its idea of the
answers are accepted by the emulator, the emulator speaks OST. Every method the SDK's services
expose is called, once with valid input (OST's success shape) and once with invalid input
(OST's error envelope with the documented code):

  users: create, get, list
  users_kyc: get_pre_signed_url_put, get_pre_signed_url_post, submit_kyc, get, list,
             email_approve, email_deny, email_report_issue
  users_kyc_details: get
  validators: verify_ethereum_address

Uploads go to the URLs the emulator handed out, straight into its S3, with plain `requests`
(S3 checks the SigV4 signature, the signed Content-Type and the expiry). Case decisions that
OST's admins make on its dashboard are made through the emulator's control API.

Usage: ost_sdk_interop.py BASE_URL API_KEY API_SECRET JPEG_FILE PDF_FILE
Prints one JSON object (user ids, S3 keys, statuses) on the last line; exits non-zero with a
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


def ok(answer, what):
    check(answer.get("success") is True, what + " succeeds", answer)
    return answer.get("data")


def refused(answer, code, what, parameter=None):
    check(answer.get("success") is False, what + " is refused", answer)
    check(answer["err"]["code"] == code, "%s: code %s" % (what, code), answer)
    check(answer["err"].get("msg"), what + ": a message", answer)
    if parameter is not None:
        names = [e["parameter"] for e in answer["err"]["error_data"]]
        check(parameter in names, "%s: error_data names %s" % (what, parameter), answer)
    return answer["err"]


def sdk(base_url, api_key, api_secret):
    return ost_kyc_sdk_python.Services({
        "api_key": api_key,
        "api_secret": api_secret,
        "api_base_url": base_url,
        "config": {"timeout": 15},
    }).services


def control(base_url, user_id, action, body=None):
    """An admin's decision on OST's dashboard, through the emulator's control API."""
    r = requests.post("%s/__emulator/users/%s/kyc/%s" % (base_url, user_id, action),
                      json=body or {}, timeout=15)
    check(r.status_code == 200, "control %s (got %d: %s)" % (action, r.status_code, r.text[:300]))
    return r.json()


def users(services, result):
    email = "interop-%s@example.com" % uuid.uuid4().hex[:12]
    user = ok(services.users.create({"email": email}), "users.create")["user"]
    check(user["email"] == email and user["properties"] == [], "users.create: the user", user)
    refused(services.users.create({"email": email}), "BAD_REQUEST", "users.create twice", "email")
    refused(services.users.create({"email": "not-an-email"}), "BAD_REQUEST", "users.create bad email", "email")

    got = ok(services.users.get({"id": user["id"]}), "users.get")["user"]
    check(got == user, "users.get returns the created user", got)
    refused(services.users.get({"id": 999999999}), "NOT_FOUND", "users.get unknown")
    refused(services.users.get({"id": "abc"}), "BAD_REQUEST", "users.get non-integer", "id")

    # Newest first by default; next_page_payload goes straight back into list().
    first = ok(services.users.list(), "users.list")
    check(first["result_type"] == "users" and first["users"][0]["id"] == user["id"],
          "users.list: newest first", first)
    total, seen, payload = first["meta"]["total"], len(first["users"]), first["meta"]["next_page_payload"]
    while payload:
        page = ok(services.users.list(payload), "users.list next page")
        seen += len(page["users"])
        payload = page["meta"]["next_page_payload"]
    check(seen == total, "users.list pages add up to meta.total (%d of %d)" % (seen, total))
    oldest = ok(services.users.list({"order": "asc", "limit": 1, "page_number": 1}), "users.list asc")
    check(len(oldest["users"]) == 1 and oldest["users"][0]["id"] < user["id"], "users.list asc", oldest)
    mine = ok(services.users.list({"filters": {"email": email[:20]}}), "users.list by email")
    check([u["id"] for u in mine["users"]] == [user["id"]], "users.list email filter", mine)
    refused(services.users.list({"limit": 101}), "BAD_REQUEST", "users.list limit 101", "limit")
    result["user_id"] = user["id"]
    return user["id"]


def upload(services, jpeg_path, pdf_path, result):
    files = {"document_id": "image/jpeg", "selfie": "image/jpeg", "residence_proof": "application/pdf"}
    targets = ok(services.users_kyc.get_pre_signed_url_put({"files": dict(files)}),
                 "get_pre_signed_url_put")["file_upload_put"]
    check(sorted(targets) == sorted(files), "one URL per requested slot", targets)
    refused(services.users_kyc.get_pre_signed_url_put({"files": {"passport": "image/jpeg"}}),
            "BAD_REQUEST", "get_pre_signed_url_put unknown slot", "files[passport]")

    paths = {"document_id": jpeg_path, "selfie": jpeg_path, "residence_proof": pdf_path}
    keys = {}
    for slot, content_type in files.items():
        with open(paths[slot], "rb") as body:
            put = requests.put(targets[slot]["url"], data=body,
                               headers={"Content-Type": content_type}, timeout=30)
        check(put.status_code == 200, "PUT %s to S3 (got %d: %s)" % (slot, put.status_code, put.text[:300]))
        keys[slot] = targets[slot]["fields"]["key"]
    result["keys"] = keys

    # S3 checks the signed Content-Type: the same URL with another type is refused.
    with open(jpeg_path, "rb") as body:
        wrong = requests.put(targets["selfie"]["url"], data=body,
                             headers={"Content-Type": "image/png"}, timeout=30)
    check(400 <= wrong.status_code < 500, "a PUT with an unsigned Content-Type is refused (got %d)" % wrong.status_code)
    result["wrong_type_status"] = wrong.status_code

    # Browser-style upload: a presigned POST form, posted straight to S3.
    form = ok(services.users_kyc.get_pre_signed_url_post({"files": {"residence_proof": "application/pdf"}}),
              "get_pre_signed_url_post")["file_upload_post"]["residence_proof"]
    with open(pdf_path, "rb") as body:
        posted = requests.post(form["url"], data=form["fields"],
                               files={"file": (os.path.basename(pdf_path), body, "application/pdf")},
                               timeout=30)
    check(200 <= posted.status_code < 300, "POST form upload (got %d: %s)" % (posted.status_code, posted.text[:300]))
    result["post_key"] = form["fields"]["key"]
    refused(services.users_kyc.get_pre_signed_url_post({"files": {"selfie": "image/gif"}}),
            "BAD_REQUEST", "get_pre_signed_url_post gif", "files[selfie]")
    return keys


def details_for(keys):
    """The spec's example values, with the uploaded keys as file paths."""
    return {
        "first_name": "aniket", "last_name": "ayachit", "birthdate": "21/12/1991",
        "country": "india", "nationality": "indian", "document_id_number": "arqpa7659a",
        "document_id_file_path": keys["document_id"], "selfie_file_path": keys["selfie"],
        "residence_proof_file_path": keys["residence_proof"],
        "ethereum_address": "0xdfbc84ccac430f2c0455c437adf417095d7ad68e",
        "estimated_participation_amount": "2", "street_address": "afawfveav ",
        "city": "afawfveav", "state": "afawfveav", "postal_code": "afawfveav",
    }


def submit(services, base_url, api_key, api_secret, user_id, keys, result):
    case = ok(services.users_kyc.submit_kyc(dict(details_for(keys), user_id=user_id)), "submit_kyc")["user_kyc"]
    check(case["user_id"] == user_id and case["kyc_status"] == "pending", "submit_kyc: the case", case)

    status = ok(services.users_kyc.get({"user_id": user_id}), "users_kyc.get")["user_kyc"]
    check(status == case, "users_kyc.get returns the case", status)
    result["submission_count"] = status["submission_count"]
    refused(services.users_kyc.get({"user_id": 999999999}), "NOT_FOUND", "users_kyc.get unknown")

    # A base URL with a trailing slash makes the SDK request `//api/v2/...`; still accepted.
    ok(sdk(base_url + "/", api_key, api_secret).users_kyc.get({"user_id": user_id}), "a base URL ending in /")

    # A key that does not exist in the bucket is refused, naming only that field.
    missing = "4/i/" + "0" * 32
    bogus = services.users_kyc.submit_kyc(dict(details_for(keys), user_id=user_id, document_id_file_path=missing))
    err = refused(bogus, "BAD_REQUEST", "submit_kyc with a missing file", "document_id_file_path")
    check([e["parameter"] for e in err["error_data"]] == ["document_id_file_path"], "only the missing file", bogus)
    result["missing_file_error"] = err["error_data"]
    bad = dict(details_for(keys), user_id=user_id, birthdate="1991-12-21", country="Atlantis")
    del bad["first_name"]
    names = sorted(e["parameter"] for e in refused(services.users_kyc.submit_kyc(bad), "BAD_REQUEST",
                                                   "submit_kyc with bad fields")["error_data"])
    check(names == ["birthdate", "country", "first_name"], "every bad field at once: %s" % names)

    detail = ok(services.users_kyc_details.get({"user_id": user_id}), "users_kyc_details.get")
    check(detail["result_type"] == "user_kyc_detail", "users_kyc_details.get: result_type", detail)
    d = detail["user_kyc_detail"]
    check(d["country"] == "INDIA" and d["first_name"] == "aniket", "users_kyc_details.get: fields", d)
    served = requests.get(d["selfie_file"], timeout=30)
    check(served.status_code == 200, "the detail's selfie URL serves the file (got %d)" % served.status_code)
    result["detail_selfie_bytes"] = len(served.content)
    refused(services.users_kyc_details.get({"user_id": 999999999}), "NOT_FOUND", "users_kyc_details.get unknown")


def decisions_and_emails(services, base_url, first_user, keys, result):
    """Three cases decided three ways; the emails and the list follow the decisions."""
    approved, denied, flagged = first_user, 11002, 11003
    for user_id in (denied, flagged):
        ok(services.users_kyc.submit_kyc(dict(details_for(keys), user_id=user_id)), "submit_kyc %d" % user_id)

    refused(services.users_kyc.email_approve({"user_id": approved}), "UNPROCESSABLE_ENTITY",
            "email_approve before the approval")
    control(base_url, approved, "approve", {"admin": "Interop Admin"})
    ok(services.users_kyc.email_approve({"user_id": approved, "template_vars": {"name": "Aniket"}}), "email_approve")

    refused(services.users_kyc.email_deny({"user_id": approved}), "UNPROCESSABLE_ENTITY", "email_deny an approved case")
    control(base_url, denied, "deny")
    ok(services.users_kyc.email_deny({"user_id": denied}), "email_deny")

    refused(services.users_kyc.email_report_issue({"user_id": flagged}), "UNPROCESSABLE_ENTITY",
            "email_report_issue with no issue reported")
    control(base_url, flagged, "report-issue", {"types": ["data_mismatch"]})
    ok(services.users_kyc.email_report_issue({"user_id": flagged}), "email_report_issue")
    refused(services.users_kyc.email_approve({"user_id": 999999999}), "NOT_FOUND", "email_approve unknown user")

    listed = ok(services.users_kyc.list(), "users_kyc.list")
    check(listed["result_type"] == "users_kyc" and listed["meta"]["total"] == 3, "users_kyc.list: every case", listed)
    statuses = {c["user_id"]: c["kyc_status"] for c in listed["users_kyc"]}
    check(statuses == {approved: "approved", denied: "denied", flagged: "pending"}, "users_kyc.list statuses", statuses)
    qualified = ok(services.users_kyc.list({"filters": {"admin_status": "qualified"}}), "users_kyc.list filtered")
    check([c["user_id"] for c in qualified["users_kyc"]] == [approved], "admin_status filter", qualified)
    issues = ok(services.users_kyc.list({"filters": {"admin_action_types": "data_mismatch"}, "order": "asc"}),
                "users_kyc.list by issue")
    check([c["user_id"] for c in issues["users_kyc"]] == [flagged], "admin_action_types filter", issues)
    refused(services.users_kyc.list({"filters": {"admin_status": "approved"}}), "BAD_REQUEST",
            "users_kyc.list bad filter value", "filters[admin_status]")
    result["statuses"] = {str(k): v for k, v in statuses.items()}


def validators(services, result):
    answer = services.validators.verify_ethereum_address(
        {"ethereum_address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"})
    check(answer == {"success": True}, "verify_ethereum_address: the documented answer", answer)
    refused(services.validators.verify_ethereum_address(
        {"ethereum_address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"}),
        "BAD_REQUEST", "verify_ethereum_address wrong checksum", "ethereum_address")
    refused(services.validators.verify_ethereum_address({"ethereum_address": "0x123"}),
            "BAD_REQUEST", "verify_ethereum_address short", "ethereum_address")
    result["validator"] = "ok"


def main():
    base_url, api_key, api_secret, jpeg_path, pdf_path = sys.argv[1:6]
    services = sdk(base_url, api_key, api_secret)
    result = {}

    user_id = users(services, result)
    keys = upload(services, jpeg_path, pdf_path, result)
    submit(services, base_url, api_key, api_secret, user_id, keys, result)
    decisions_and_emails(services, base_url, user_id, keys, result)
    validators(services, result)

    # Wrong secret: OST's 401 envelope, which the SDK hands back as is.
    forged = sdk(base_url, api_key, "0" * 32).users_kyc.get_pre_signed_url_put({"files": {"selfie": "image/jpeg"}})
    refused(forged, "UNAUTHORIZED", "a wrong secret")

    print(json.dumps(result))


if __name__ == "__main__":
    main()
