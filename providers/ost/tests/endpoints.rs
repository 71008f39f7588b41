//! Every endpoint of OST's API reference against the emulator, through the crate's signed
//! client: the documented success shape for valid input, OST's error envelope with the right
//! status and code (and `error_data` per parameter) for invalid input; pagination, filters and
//! sort orders of both lists.

mod common;

use docgate_ost::{
    api::KycEmail,
    emulator::{AmlStatus, KycChange, WhitelistStatus},
};
use serde_json::{json, Map, Value};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_added_retrieved_and_refused_as_ost_does() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let api = ost_api(&emu);

    let data = api
        .create_user("kyc.user@example.com")
        .await
        .expect("created");
    assert_eq!(data["result_type"], "user");
    let user = &data["user"];
    let id = user["id"].as_u64().expect("id");
    assert_eq!(
        (user["email"].as_str(), &user["properties"]),
        (Some("kyc.user@example.com"), &json!([]))
    );
    assert!(user["created_at"].as_i64().is_some());
    assert_eq!(api.user(id).await.expect("retrieved")["user"], *user);

    let (status, code, _, params) = refusal(
        api.create_user("kyc.user@example.com")
            .await
            .expect_err("taken"),
    );
    assert_eq!(
        (status, code.as_str(), params),
        (400, "BAD_REQUEST", vec!["email".to_string()])
    );
    let (status, _, _, params) = refusal(api.create_user("not-an-email").await.expect_err("bad"));
    assert_eq!((status, params), (400, vec!["email".to_string()]));
    let (status, code, _, _) = refusal(api.user(424242).await.expect_err("unknown"));
    assert_eq!((status, code.as_str()), (404, "NOT_FOUND"));
    // The SDK lets any [a-z0-9.-] id through; OST's service refuses a non-integer one.
    let (status, _, _, params) = refusal(
        api.get("/api/v2/users/abc", Map::new())
            .await
            .expect_err("abc"),
    );
    assert_eq!((status, params), (400, vec!["id".to_string()]));
    emu.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_list_pages_sorts_and_filters_as_documented() {
    let (emu, _dir) = start_emulator(|o| o.seed_users = 25).await;
    let api = ost_api(&emu);

    // Default: newest first, 10 per page, the next page's parameters to send back as they are.
    let first = api.users(Map::new()).await.expect("list");
    assert_eq!(first["result_type"], "users");
    let ids = |page: &Value| -> Vec<u64> {
        page["users"]
            .as_array()
            .expect("users")
            .iter()
            .map(|u| u["id"].as_u64().expect("id"))
            .collect()
    };
    assert_eq!(ids(&first), (11016..=11025).rev().collect::<Vec<_>>());
    assert_eq!(first["meta"]["total"], 25);
    let next = first["meta"]["next_page_payload"].clone();
    assert_eq!(
        next,
        json!({"page_number": 2, "filters": {}, "order": "desc", "limit": 10})
    );
    let mut seen = ids(&first);
    let mut payload = next;
    while payload != json!({}) {
        let page = api.users(object(payload.clone())).await.expect("next page");
        seen.extend(ids(&page));
        payload = page["meta"]["next_page_payload"].clone();
    }
    assert_eq!(
        seen,
        (11001..=11025).rev().collect::<Vec<_>>(),
        "every user once, in order"
    );

    // Oldest first, 7 per page, third page.
    let page = api
        .users(object(
            json!({"order": "asc", "limit": "7", "page_number": "3"}),
        ))
        .await
        .expect("asc");
    assert_eq!(ids(&page), (11015..=11021).collect::<Vec<_>>());
    // The page that ends exactly at the last user is the last page.
    let last = api
        .users(object(json!({"limit": "5", "page_number": "5"})))
        .await
        .expect("last");
    assert_eq!(
        (ids(&last), &last["meta"]["next_page_payload"]),
        (vec![11005, 11004, 11003, 11002, 11001], &json!({}))
    );
    // Past the end: an empty array, no error.
    let beyond = api
        .users(object(json!({"page_number": "9"})))
        .await
        .expect("beyond");
    assert_eq!(
        (ids(&beyond).len(), &beyond["meta"]["next_page_payload"]),
        (0, &json!({}))
    );

    // Filters: an email prefix (any case) and the KYC property.
    submit_valid(&emu, 11003).await;
    let by_email = api
        .users(object(json!({"filters": {"email": "USER1100"}})))
        .await
        .expect("email filter");
    assert_eq!(by_email["meta"]["total"], 9, "user11001 … user11009");
    let submitted = api
        .users(object(json!({"filters": {"is_kyc_submitted": "true"}})))
        .await
        .expect("submitted filter");
    assert_eq!(ids(&submitted), vec![11003]);
    assert_eq!(
        submitted["users"][0]["properties"],
        json!(["kyc_submitted"])
    );

    // Every bad parameter is named at once.
    let (status, code, _, params) = refusal(
        api.users(object(
            json!({"limit": "101", "page_number": "0", "order": "newest",
                                "filters": {"is_kyc_submitted": "True", "colour": "red"}}),
        ))
        .await
        .expect_err("bad list"),
    );
    assert_eq!((status, code.as_str()), (400, "BAD_REQUEST"));
    assert_eq!(
        params,
        vec![
            "page_number",
            "limit",
            "order",
            "filters[colour]",
            "filters[is_kyc_submitted]"
        ]
    );
    emu.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_is_checked_field_by_field_and_a_closed_case_refuses_another() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let api = ost_api(&emu);
    let id = upload(&emu, "document_id", "image/jpeg", jpeg(210 * 1024)).await;
    let selfie = upload(&emu, "selfie", "image/jpeg", jpeg(210 * 1024)).await;
    let small = upload(&emu, "residence_proof", "application/pdf", pdf(100 * 1024)).await;

    // Three mandatory fields missing, two bad, one file too small, one never uploaded.
    let mut details = kyc_details(&id, &selfie);
    for name in ["first_name", "city", "postal_code"] {
        details.remove(name);
    }
    details.insert("country".into(), json!("Atlantis"));
    details.insert("birthdate".into(), json!("1985-12-10"));
    details.insert("residence_proof_file_path".into(), json!(small));
    details.insert(
        "selfie_file_path".into(),
        json!("4/i/00000000000000000000000000000000"),
    );
    let (status, code, _, params) = refusal(api.submit_kyc(11001, details).await.expect_err("bad"));
    assert_eq!((status, code.as_str()), (400, "BAD_REQUEST"));
    assert_eq!(
        params,
        vec![
            "birthdate",
            "country",
            "first_name",
            "city",
            "postal_code",
            "residence_proof_file_path",
            "selfie_file_path"
        ]
    );

    let data = api
        .submit_kyc(11001, kyc_details(&id, &selfie))
        .await
        .expect("valid");
    assert_eq!(data["result_type"], "user_kyc");
    let case = &data["user_kyc"];
    for (field, value) in [
        ("user_id", json!(11001)),
        ("kyc_status", json!("pending")),
        ("admin_status", json!("unprocessed")),
        ("aml_status", json!("unprocessed")),
        ("whitelist_status", json!("unprocessed")),
        ("admin_action_types", json!([])),
        ("submission_count", json!(1)),
        ("last_acted_by", json!("")),
    ] {
        assert_eq!(case[field], value, "{field}");
    }
    assert!(
        case["id"].is_u64() && case["user_kyc_detail_id"].is_u64() && case["created_at"].is_i64()
    );
    assert_eq!(api.user_kyc(11001).await.expect("get")["user_kyc"], *case);
    let (status, _, _, _) = refusal(
        api.submit_kyc(999_999, kyc_details(&id, &selfie))
            .await
            .expect_err("no user"),
    );
    assert_eq!(status, 404);
    let (status, _, _, _) = refusal(api.user_kyc(11002).await.expect_err("never submitted"));
    assert_eq!(status, 404);

    // Denied: closed; a resubmission is OST's 422 until the case is reopened.
    emu.change_kyc(11001, &KycChange::Deny { admin: None })
        .expect("deny");
    let (status, code, _, _) = refusal(
        api.submit_kyc(11001, kyc_details(&id, &selfie))
            .await
            .expect_err("closed"),
    );
    assert_eq!((status, code.as_str()), (422, "UNPROCESSABLE_ENTITY"));
    emu.change_kyc(11001, &KycChange::Reopen { admin: None })
        .expect("reopen");
    let again = api
        .submit_kyc(11001, kyc_details(&id, &selfie))
        .await
        .expect("resubmitted");
    assert_eq!(again["user_kyc"]["submission_count"], 2);
    emu.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kyc_list_filters_by_every_status_and_orders_by_last_submission() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let api = ost_api(&emu);
    for user in [11001, 11002, 11003, 11004] {
        submit_valid(&emu, user).await;
    }
    emu.change_kyc(
        11002,
        &KycChange::Approve {
            admin: Some("Grace".into()),
        },
    )
    .expect("approve");
    emu.change_kyc(11002, &KycChange::Whitelist(WhitelistStatus::Done))
        .expect("whitelist");
    emu.change_kyc(11003, &KycChange::Deny { admin: None })
        .expect("deny");
    emu.change_kyc(11004, &KycChange::Aml(AmlStatus::Pending))
        .expect("aml");
    emu.change_kyc(
        11004,
        &KycChange::ReportIssue {
            types: vec![docgate_ost::emulator::AdminActionType::DocumentIssue],
            admin: None,
        },
    )
    .expect("issue");
    submit_valid(&emu, 11001).await; // a resubmission moves 11001 to the front

    let users = |page: &Value| -> Vec<u64> {
        page["users_kyc"]
            .as_array()
            .expect("list")
            .iter()
            .map(|k| k["user_id"].as_u64().expect("id"))
            .collect()
    };
    let all = api.users_kyc(Map::new()).await.expect("list");
    assert_eq!(all["result_type"], "users_kyc");
    assert_eq!(users(&all), vec![11001, 11004, 11003, 11002]);
    assert_eq!(
        (&all["meta"]["total"], &all["meta"]["next_page_payload"]),
        (&json!(4), &json!({}))
    );
    let asc = api
        .users_kyc(object(json!({"order": "asc", "limit": "2"})))
        .await
        .expect("asc");
    assert_eq!(users(&asc), vec![11002, 11003]);
    assert_eq!(
        asc["meta"]["next_page_payload"],
        json!({"page_number": 2, "filters": {}, "order": "asc", "limit": 2})
    );

    for (filter, value, expected) in [
        ("admin_status", "qualified", vec![11002]),
        ("admin_status", "denied", vec![11003]),
        ("aml_status", "cleared:approved", vec![11002]),
        ("aml_status", "pending", vec![11004]),
        ("whitelist_status", "done", vec![11002]),
        ("admin_action_types", "document_issue", vec![11004]),
        (
            "admin_action_types",
            "no_admin_action",
            vec![11001, 11003, 11002],
        ),
    ] {
        let page = api
            .users_kyc(object(json!({"filters": {filter: value}})))
            .await
            .unwrap_or_else(|e| panic!("{filter}={value}: {e}"));
        assert_eq!(users(&page), expected, "{filter}={value}");
    }
    let approved = &api.user_kyc(11002).await.expect("get")["user_kyc"];
    assert_eq!(
        (
            &approved["kyc_status"],
            &approved["last_acted_by"],
            &approved["whitelist_status"]
        ),
        (&json!("approved"), &json!("Grace"), &json!("done"))
    );

    let (status, _, _, params) = refusal(
        api.users_kyc(object(
            json!({"filters": {"admin_status": "approved"}, "size": "3"}),
        ))
        .await
        .expect_err("bad"),
    );
    assert_eq!(
        (status, params),
        (
            400,
            vec!["size".to_string(), "filters[admin_status]".to_string()]
        )
    );
    emu.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kyc_details_come_with_working_file_urls_or_only_an_id_when_hidden() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let api = ost_api(&emu);
    let selfie_bytes = png(210 * 1024);
    let id = upload(&emu, "document_id", "image/jpeg", jpeg(210 * 1024)).await;
    let selfie = upload(&emu, "selfie", "image/png", selfie_bytes.clone()).await;
    let case = api
        .submit_kyc(11005, kyc_details(&id, &selfie))
        .await
        .expect("submitted");

    let data = api.user_kyc_detail(11005).await.expect("detail");
    assert_eq!(data["result_type"], "user_kyc_detail");
    let d = &data["user_kyc_detail"];
    assert_eq!(d["id"], case["user_kyc"]["user_kyc_detail_id"]);
    assert_eq!(
        (&d["country"], &d["nationality"]),
        (&json!("INDIA"), &json!("INDIAN"))
    );
    assert_eq!(
        (&d["first_name"], &d["birthdate"]),
        (&json!("Ada"), &json!("10/12/1985"))
    );
    assert_eq!(d["estimated_participation_amount"], 2.5);
    assert_eq!(
        (&d["residence_proof_file"], &d["investor_proof_files"]),
        (&Value::Null, &json!([]))
    );
    let url = d["selfie_file"].as_str().expect("selfie URL");
    assert!(url.contains("X-Amz-Expires=43200"), "12 hours: {url}");
    let fetched = reqwest::get(url)
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body");
    assert!(
        fetched.as_ref() == selfie_bytes.as_slice(),
        "the URL serves the document"
    );

    let (status, _, _, _) = refusal(api.user_kyc_detail(11006).await.expect_err("none"));
    assert_eq!(status, 404);
    emu.stop().await.expect("stop");

    let (hidden, _dir) = start_emulator(|o| o.kyc_details_visible = false).await;
    submit_valid(&hidden, 11001).await;
    let data = ost_api(&hidden)
        .user_kyc_detail(11001)
        .await
        .expect("detail");
    let only = data["user_kyc"]
        .as_object()
        .expect("user_kyc")
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(only, vec!["created_at", "id"]);
    assert!(data.get("user_kyc_detail").is_none());
    hidden.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_go_only_for_a_case_in_the_matching_state() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let api = ost_api(&emu);
    submit_valid(&emu, 11001).await;
    let vars = object(json!({"first_name": "Ada", "links": ["https://a.example"]}));

    for email in [KycEmail::Approve, KycEmail::Deny, KycEmail::ReportIssue] {
        let (status, code, _, _) = refusal(
            api.email_user(11001, email, Map::new())
                .await
                .expect_err("pending case"),
        );
        assert_eq!(
            (status, code.as_str()),
            (422, "UNPROCESSABLE_ENTITY"),
            "{email:?}"
        );
    }
    emu.change_kyc(
        11001,
        &KycChange::ReportIssue {
            types: vec![],
            admin: None,
        },
    )
    .expect_err("no types");
    emu.change_kyc(
        11001,
        &KycChange::ReportIssue {
            types: vec![docgate_ost::emulator::AdminActionType::DataMismatch],
            admin: None,
        },
    )
    .expect("issue");
    assert_eq!(
        api.email_user(11001, KycEmail::ReportIssue, vars.clone())
            .await
            .expect("sent"),
        json!({})
    );
    emu.change_kyc(11001, &KycChange::Approve { admin: None })
        .expect("approve");
    assert_eq!(
        api.email_user(11001, KycEmail::Approve, Map::new())
            .await
            .expect("sent"),
        json!({})
    );
    let (status, _, _, _) = refusal(
        api.email_user(11001, KycEmail::Deny, Map::new())
            .await
            .expect_err("approved"),
    );
    assert_eq!(status, 422);

    let sent = emu.sent_emails();
    let templates: Vec<&str> = sent.iter().map(|e| e.template.as_str()).collect();
    assert_eq!(templates, vec!["kyc_issue", "kyc_approved"]);
    assert_eq!(sent[0].template_vars, vars);
    assert_eq!(sent[0].email, "user11001@emulator.ost.test");

    // Unknown user → 404; nested template_vars → 400 naming the parameter.
    let (status, _, _, _) = refusal(
        api.email_user(999, KycEmail::Approve, Map::new())
            .await
            .expect_err("who"),
    );
    assert_eq!(status, 404);
    let deep = object(json!({"a": {"b": {"c": "d"}}}));
    let (status, _, _, params) = refusal(
        api.email_user(11001, KycEmail::Approve, deep)
            .await
            .expect_err("deep"),
    );
    assert_eq!((status, params), (400, vec!["template_vars".to_string()]));
    emu.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ethereum_validator_checks_format_and_eip55_checksum() {
    let (emu, _dir) = start_emulator(|_| {}).await;
    let api = ost_api(&emu);
    for ok in [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xde709f2102306220921060314715629080e2fb77",
        "52908400098527886E0F7030069857D2E4169EE7",
    ] {
        api.verify_ethereum_address(ok)
            .await
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    // The documented answer is exactly {"success": true}.
    let signed = docgate_ost::signing::sign_request(
        docgate_ost::api::endpoints::ETHEREUM_ADDRESS_VALIDATION,
        object(json!({"ethereum_address": "0x81b7e08f65bdf5648606c89998a9cc8164397647"})),
        emu.api_key(),
        emu.api_secret(),
        time::OffsetDateTime::now_utc().unix_timestamp(),
    );
    let body: Value = reqwest::get(format!(
        "{}{}?{}",
        emu.url(),
        docgate_ost::api::endpoints::ETHEREUM_ADDRESS_VALIDATION,
        signed.wire
    ))
    .await
    .expect("GET")
    .json()
    .await
    .expect("JSON");
    assert_eq!(body, json!({"success": true}));

    for bad in [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
        "0x123",
        "",
        "0xzz08400098527886E0F7030069857D2E4169EE7",
    ] {
        let (status, code, _, params) =
            refusal(api.verify_ethereum_address(bad).await.expect_err("invalid"));
        assert_eq!(
            (status, code.as_str(), params),
            (400, "BAD_REQUEST", vec!["ethereum_address".to_string()]),
            "{bad}"
        );
    }
    emu.stop().await.expect("stop");
}
