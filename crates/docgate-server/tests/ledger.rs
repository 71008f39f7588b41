//! The ledger suite: every test runs against SQLite and against PostgreSQL.
//!
//! PostgreSQL is the local server (127.0.0.1:5432, trust auth, database `test`; override with
//! `DOCGATE_TEST_POSTGRES_URL`). Each test gets its own schema, so runs do not interfere.

use std::sync::Arc;

use docgate_core::{DigestsHex, DocumentMeta, OwnedRef, Prepared};
use docgate_server::ledger::{
    AttemptRecord, Control, Finish, Inserted, Lease, Ledger, LedgerError, NewUpload, NotifyState,
    ProviderEvent, Reschedule, SessionRecord, SessionState, SqlLedger, StoredDocument, TusCreated,
    TusLock, TusRecord, TusState, UploadStatus, UploadSubject,
};
use serde_json::json;
use sqlx::Executor;

fn postgres_base() -> String {
    std::env::var("DOCGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn postgres_admin() -> sqlx::PgPool {
    sqlx::PgPool::connect(&postgres_base())
        .await
        .expect("PostgreSQL at DOCGATE_TEST_POSTGRES_URL or 127.0.0.1:5432")
}

/// A fresh PostgreSQL schema, and the URL of a ledger in it; its connections carry the
/// schema's name as their `application_name`.
async fn postgres_url() -> (String, String) {
    let base = postgres_base();
    let schema = format!("ledger_test_{}", uuid::Uuid::new_v4().simple());
    postgres_admin()
        .await
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}&application_name={schema}");
    (url, schema)
}

/// A ledger in a fresh PostgreSQL schema.
async fn postgres() -> SqlLedger {
    let (url, _) = postgres_url().await;
    SqlLedger::connect(&url).await.expect("connect ledger")
}

async fn sqlite(dir: &tempfile::TempDir) -> SqlLedger {
    SqlLedger::connect(&SqlLedger::sqlite_url(&dir.path().join("ledger.sqlite")))
        .await
        .expect("sqlite ledger")
}

fn doc(slot: &str) -> StoredDocument {
    StoredDocument {
        meta: DocumentMeta {
            slot: slot.into(),
            filename: Some(format!("{slot}.pdf")),
            size: 3,
            media_type: "application/pdf".into(),
            declared_type: None,
            digests: DigestsHex {
                sha256: "ab".repeat(32),
                sha512: None,
                md5: None,
            },
            entries: None,
        },
        spool_path: format!("uploads/x/{slot}"),
        pieces: None,
    }
}

fn new_upload(id: &str, key: Option<&str>, lease: Option<Lease>, now: i64) -> NewUpload {
    NewUpload {
        id: id.into(),
        tenant: "acme".into(),
        provider: "taler".into(),
        idempotency_key: key.map(str::to_owned),
        fingerprint: "fp".into(),
        prepared: Prepared(json!({"payto": "payto://iban/DE89370400440532013000"})),
        documents: vec![doc("file")],
        now,
        lease,
        first_attempt: false,
        notify: true,
        subjects: Vec::new(),
        session: None,
    }
}

/// A claim by replica `node` (owners are `<node>:<token>`).
fn lease(node: &str, until: i64) -> Lease {
    Lease {
        owner: format!("{node}:t"),
        until,
    }
}

fn providers() -> Vec<String> {
    vec!["taler".to_string()]
}

/// Runs `$body` with `$ledger` bound to each backend.
macro_rules! both_backends {
    ($name:ident, |$ledger:ident| $body:block) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let dir = tempfile::tempdir().expect("tempdir");
                let $ledger: Arc<dyn Ledger> = Arc::new(super::sqlite(&dir).await);
                $body
            }

            #[tokio::test]
            async fn postgres() {
                let $ledger: Arc<dyn Ledger> = Arc::new(super::postgres().await);
                $body
            }
        }
    };
}

both_backends!(insert_then_get_round_trips_every_field, |ledger| {
    let rec = match ledger
        .insert(new_upload("u1", None, None, 1000))
        .await
        .expect("insert")
    {
        Inserted::New(r) => r,
        other => panic!("expected new, got {other:?}"),
    };
    assert_eq!(rec.status, UploadStatus::Received);
    assert_eq!(rec.next_attempt_at, Some(1000));
    assert_eq!(rec.documents, vec![doc("file")]);
    assert_eq!(rec.notify, NotifyState::Pending);
    assert_eq!(ledger.get("u1").await.expect("get"), Some(rec));
    assert_eq!(ledger.get("nope").await.expect("get"), None);
});

both_backends!(
    idempotency_keys_are_per_tenant_and_return_the_original,
    |ledger| {
        assert!(matches!(
            ledger
                .insert(new_upload("u1", Some("k"), None, 1))
                .await
                .expect("insert"),
            Inserted::New(_)
        ));
        match ledger
            .insert(new_upload("u2", Some("k"), None, 2))
            .await
            .expect("insert")
        {
            Inserted::Existing(r) => assert_eq!(r.id, "u1"),
            other => panic!("expected existing, got {other:?}"),
        }
        let mut other_tenant = new_upload("u3", Some("k"), None, 3);
        other_tenant.tenant = "globex".into();
        assert!(matches!(
            ledger.insert(other_tenant).await.expect("insert"),
            Inserted::New(_)
        ));
        // Without a key nothing collides.
        assert!(matches!(
            ledger
                .insert(new_upload("u4", None, None, 4))
                .await
                .expect("insert"),
            Inserted::New(_)
        ));
        assert!(matches!(
            ledger
                .insert(new_upload("u5", None, None, 5))
                .await
                .expect("insert"),
            Inserted::New(_)
        ));
    }
);

both_backends!(a_claim_is_exclusive_until_its_lease_expires, |ledger| {
    ledger
        .insert(new_upload("u1", None, None, 100))
        .await
        .expect("insert");
    assert!(
        ledger
            .claim_due(&lease("a", 1000), 50, 10, &providers())
            .await
            .expect("claim")
            .is_empty(),
        "not due yet"
    );
    let claimed = ledger
        .claim_due(&lease("a", 1000), 100, 10, &providers())
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].status, UploadStatus::Delivering);
    assert!(
        ledger
            .claim_due(&lease("b", 2000), 500, 10, &providers())
            .await
            .expect("claim")
            .is_empty(),
        "leased to a"
    );
    // a dies; after its lease b takes over, and a can no longer record anything
    let taken = ledger
        .claim_due(&lease("b", 3000), 1001, 10, &providers())
        .await
        .expect("claim");
    assert_eq!(taken.len(), 1);
    assert_eq!(
        ledger
            .start_attempt("u1", &lease("a", 4000), 1100)
            .await
            .expect("attempt"),
        None
    );
    let fin = Finish {
        status: UploadStatus::Delivered,
        provider_reference: None,
        problem: None,
        upstream_status: Some(204),
        owned: Vec::new(),
        attempt: None,
        now: 1200,
    };
    assert!(ledger
        .finish("u1", "a:t", fin.clone())
        .await
        .expect("finish")
        .is_none());
    assert_eq!(
        ledger
            .start_attempt("u1", &lease("b", 4000), 1100)
            .await
            .expect("attempt"),
        Some(1)
    );
    let done = ledger.finish("u1", "b:t", fin).await.expect("finish");
    let rec = ledger.get("u1").await.expect("get").expect("exists");
    // What finish returns is what a waiting request answers with: the row as committed.
    assert_eq!(done.as_ref(), Some(&rec));
    assert_eq!(
        (
            rec.status,
            rec.attempts,
            rec.delivered_at,
            rec.last_upstream_status
        ),
        (UploadStatus::Delivered, 1, Some(1200), Some(204))
    );
    assert_eq!(rec.lease_owner, None);
});

both_backends!(
    concurrent_claims_never_hand_out_the_same_upload_twice,
    |ledger| {
        for i in 0..40 {
            ledger
                .insert(new_upload(&format!("u{i}"), None, None, 10))
                .await
                .expect("insert");
        }
        let mut tasks = Vec::new();
        for w in 0..4 {
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = ledger
                        .claim_due(&lease(&format!("w{w}"), 1_000_000), 20, 3, &providers())
                        .await
                        .expect("claim");
                    if got.is_empty() {
                        break;
                    }
                    mine.extend(got.into_iter().map(|r| r.id));
                }
                mine
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("join"));
        }
        all.sort();
        let n = all.len();
        all.dedup();
        assert_eq!(
            (n, all.len()),
            (40, 40),
            "every upload claimed exactly once"
        );
    }
);

both_backends!(reschedule_releases_the_lease_until_due, |ledger| {
    ledger
        .insert(new_upload("u1", None, Some(lease("a", 1000)), 10))
        .await
        .expect("insert");
    assert_eq!(
        ledger
            .start_attempt("u1", &lease("a", 1000), 20)
            .await
            .expect("attempt"),
        Some(1)
    );
    assert!(ledger
        .reschedule(
            "u1",
            "a:t",
            Reschedule {
                next_at: 500,
                reason: "500 from provider".into(),
                upstream_status: Some(500),
                now: 30,
                attempt: None,
            }
        )
        .await
        .expect("reschedule"));
    let rec = ledger.get("u1").await.expect("get").expect("exists");
    assert_eq!(
        (rec.status, rec.next_attempt_at, rec.last_error.as_deref()),
        (
            UploadStatus::RetryScheduled,
            Some(500),
            Some("500 from provider")
        )
    );
    assert!(ledger
        .claim_due(&lease("b", 2000), 499, 10, &providers())
        .await
        .expect("claim")
        .is_empty());
    assert_eq!(
        ledger
            .claim_due(&lease("b", 2000), 500, 10, &providers())
            .await
            .expect("claim")
            .len(),
        1
    );
    assert_eq!(
        ledger
            .start_attempt("u1", &lease("b", 2000), 510)
            .await
            .expect("attempt"),
        Some(2)
    );
});

both_backends!(releasing_leases_makes_work_due_again, |ledger| {
    ledger
        .insert(new_upload("u1", None, Some(lease("a", 1_000_000)), 10))
        .await
        .expect("insert");
    ledger
        .insert(new_upload("u2", None, Some(lease("b", 1_000_000)), 10))
        .await
        .expect("insert");
    assert_eq!(ledger.release_node("a", 20).await.expect("release"), 1);
    let claimed = ledger
        .claim_due(&lease("c", 2000), 20, 10, &providers())
        .await
        .expect("claim");
    assert_eq!(
        claimed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["u1"]
    );
    assert_eq!(ledger.release_all(30).await.expect("release"), 2);
    assert_eq!(
        ledger
            .claim_due(&lease("d", 2000), 30, 10, &providers())
            .await
            .expect("claim")
            .len(),
        2
    );
});

both_backends!(
    identifiers_have_one_owner_the_first_tenant_to_claim_them,
    |ledger| {
        ledger
            .insert(new_upload("u1", None, Some(lease("a", 1000)), 10))
            .await
            .expect("insert");
        let key = |v: &str| OwnedRef::new("s3_key", v);
        let fin = Finish {
            owned: vec![key("4/i/abc"), key("4/i/def")],
            ..Finish::delivered(
                UploadStatus::Delivered,
                json!({"document_id": "4/i/abc", "selfie": "4/i/def"}),
                Vec::new(),
                None,
            )
        };
        assert!(ledger
            .finish("u1", "a:t", fin)
            .await
            .expect("finish")
            .is_some());
        assert!(ledger
            .owns_ref("acme", "taler", &key("4/i/def"))
            .await
            .expect("owns"));
        assert!(!ledger
            .owns_ref("globex", "taler", &key("4/i/def"))
            .await
            .expect("owns"));
        assert!(!ledger
            .owns_ref("acme", "taler", &key("4/i/zzz"))
            .await
            .expect("owns"));
        assert!(
            !ledger
                .owns_ref("acme", "ost", &key("4/i/def"))
                .await
                .expect("owns"),
            "per provider"
        );

        let user = OwnedRef::new("user", "11001");
        assert!(ledger
            .claim_ref("globex", "ost", &user, "kyc")
            .await
            .expect("claim"));
        assert!(
            ledger
                .claim_ref("globex", "ost", &user, "kyc")
                .await
                .expect("again"),
            "idempotent"
        );
        assert!(
            !ledger
                .claim_ref("acme", "ost", &user, "kyc")
                .await
                .expect("claim"),
            "regression: a second tenant cannot take over another tenant's OST user"
        );
        assert!(!ledger.owns_ref("acme", "ost", &user).await.expect("owns"));
    }
);

/// Upload `u1`, leased by `a:t`, ends `rejected` at 50 (its tenant is to be notified).
async fn reject_u1(ledger: &dyn Ledger) {
    let fin = Finish {
        status: UploadStatus::Rejected,
        provider_reference: None,
        problem: Some(json!({"code": "provider_rejected"})),
        upstream_status: Some(403),
        owned: Vec::new(),
        attempt: None,
        now: 50,
    };
    assert!(ledger
        .finish("u1", "a:t", fin)
        .await
        .expect("finish")
        .is_some());
}

both_backends!(notifications_are_claimed_once_final_and_retried, |ledger| {
    ledger
        .insert(new_upload("u1", None, Some(lease("a", 1000)), 10))
        .await
        .expect("insert");
    assert!(
        ledger
            .claim_notifications(100, 200, 10)
            .await
            .expect("claim")
            .is_empty(),
        "not final yet"
    );
    reject_u1(&*ledger).await;
    let due = ledger
        .claim_notifications(100, 200, 10)
        .await
        .expect("claim");
    assert_eq!(due.len(), 1);
    assert!(
        ledger
            .claim_notifications(150, 300, 10)
            .await
            .expect("claim")
            .is_empty(),
        "held while sending"
    );
    ledger
        .notification_done("u1", 200, NotifyState::Pending, Some(400), 160)
        .await
        .expect("done");
    assert!(ledger
        .claim_notifications(399, 500, 10)
        .await
        .expect("claim")
        .is_empty());
    assert_eq!(
        ledger
            .claim_notifications(400, 500, 10)
            .await
            .expect("claim")
            .len(),
        1
    );
    assert!(ledger
        .notification_done("u1", 500, NotifyState::Sent, None, 410)
        .await
        .expect("done"));
    let rec = ledger.get("u1").await.expect("get").expect("exists");
    assert_eq!((rec.notify, rec.notify_attempts), (NotifyState::Sent, 2));
});

// Regression: an operator's retry while the upload's `rejected` receipt was being sent was
// overwritten by that send's result (`sent`): the retried delivery's own final receipt never
// went out. The result of a claim a retry superseded is not recorded.
both_backends!(
    regression_a_retry_while_a_notification_is_sent_keeps_the_new_series_notification,
    |ledger| {
        ledger
            .insert(new_upload("u1", None, Some(lease("a", 1000)), 10))
            .await
            .expect("insert");
        reject_u1(&*ledger).await;
        let due = ledger
            .claim_notifications(100, 200, 10)
            .await
            .expect("claim");
        assert_eq!(due.len(), 1);
        assert!(matches!(
            ledger.retry("u1", 120).await.expect("retry"),
            Control::Done(_)
        ));
        assert!(
            !ledger
                .notification_done("u1", 200, NotifyState::Sent, None, 130)
                .await
                .expect("done"),
            "the claim was superseded"
        );
        let rec = ledger.get("u1").await.expect("get").expect("exists");
        assert_eq!(
            (rec.notify, rec.notify_attempts),
            (NotifyState::Pending, 0),
            "the new series notifies afresh"
        );
    }
);

/// Upload `u1`, leased by `a:t`, ends `duplicate` at 20.
async fn end_u1_as_duplicate_at_20(ledger: &dyn Ledger) {
    let fin = Finish {
        status: UploadStatus::Duplicate,
        provider_reference: Some(json!({})),
        problem: None,
        upstream_status: Some(412),
        owned: Vec::new(),
        attempt: None,
        now: 20,
    };
    assert!(ledger
        .finish("u1", "a:t", fin)
        .await
        .expect("finish")
        .is_some());
}

/// The uploads whose spools the sweep removes, with a retention that ends at `before`.
async fn due_ids(ledger: &dyn Ledger, before: i64) -> Vec<String> {
    ledger
        .spool_removal_due(before, 10)
        .await
        .expect("due")
        .into_iter()
        .map(|r| r.id)
        .collect()
}

both_backends!(spool_removal_lists_final_uploads_once, |ledger| {
    ledger
        .insert(new_upload("u1", None, Some(lease("a", 1000)), 10))
        .await
        .expect("insert");
    ledger
        .insert(new_upload("u2", None, None, 10))
        .await
        .expect("insert");
    end_u1_as_duplicate_at_20(&*ledger).await;
    assert_eq!(due_ids(&*ledger, 100).await, vec!["u1"]);
    ledger
        .mark_spool_removed(&["u1".to_owned()])
        .await
        .expect("mark");
    assert!(ledger
        .spool_removal_due(100, 10)
        .await
        .expect("due")
        .is_empty());
    assert_eq!(ledger.live_upload_ids().await.expect("live"), vec!["u2"]);
});

// Regression: an erasure whose own removal of the documents failed (503
// `erasure_incomplete`, or the process died after its commit) left them on disk for a whole
// retention period, since the erasure moved `updated_at` forward. Erased, it is due at once.
both_backends!(
    regression_an_erased_upload_s_documents_are_due_for_removal_at_once,
    |ledger| {
        ledger
            .insert(new_upload("u1", None, Some(lease("a", 1000)), 10))
            .await
            .expect("insert");
        end_u1_as_duplicate_at_20(&*ledger).await;
        // Retention: documents of uploads final before 15 are due; this one ended at 20.
        assert!(due_ids(&*ledger, 15).await.is_empty());
        assert!(ledger.erase("u1", 30).await.expect("erase").is_some());
        assert_eq!(due_ids(&*ledger, 15).await, vec!["u1"]);
    }
);

both_backends!(
    events_are_recorded_once_and_shown_to_their_subject_s_owner,
    |ledger| {
        let user = OwnedRef::new("user", "236");
        let e = ProviderEvent {
            provider: "ost".into(),
            event_id: "236".into(),
            name: "user_register".into(),
            received_at: 5,
            subject: Some(user.clone()),
            payload: json!({"id": "236"}),
        };
        assert!(ledger.record_event(&e).await.expect("record"));
        assert!(
            !ledger.record_event(&e).await.expect("record"),
            "a replay is refused"
        );
        let anonymous = ProviderEvent {
            event_id: "237".into(),
            subject: None,
            ..e.clone()
        };
        assert!(ledger.record_event(&anonymous).await.expect("record"));
        assert!(ledger
            .list_events("acme", "ost", 10)
            .await
            .expect("list")
            .is_empty());
        ledger
            .claim_ref("acme", "ost", &user, "kyc")
            .await
            .expect("claim");
        assert_eq!(
            ledger.list_events("acme", "ost", 10).await.expect("list"),
            vec![e]
        );
        assert!(ledger
            .list_events("globex", "ost", 10)
            .await
            .expect("list")
            .is_empty());
    }
);

both_backends!(status_counts_group_by_provider_and_status, |ledger| {
    ledger
        .insert(new_upload("u1", None, None, 1))
        .await
        .expect("insert");
    ledger
        .insert(new_upload("u2", None, None, 1))
        .await
        .expect("insert");
    let counts = ledger.status_counts().await.expect("counts");
    assert_eq!(
        counts,
        vec![("taler".to_string(), UploadStatus::Received, 2)]
    );
    ledger.ping().await.expect("ping");
});

both_backends!(a_lease_is_renewed_only_while_held_and_unexpired, |ledger| {
    ledger
        .insert(new_upload("u1", None, Some(lease("a", 1000)), 10))
        .await
        .expect("insert");
    assert!(ledger
        .renew("u1", &lease("a", 2000), 900)
        .await
        .expect("renew"));
    assert!(
        !ledger
            .renew("u1", &lease("b", 3000), 900)
            .await
            .expect("renew"),
        "not b's"
    );
    assert!(
        !ledger
            .renew("u1", &lease("a", 5000), 2001)
            .await
            .expect("renew"),
        "expired: maybe claimed elsewhere"
    );
    assert_eq!(
        ledger
            .start_attempt("u1", &lease("a", 5000), 2001)
            .await
            .expect("attempt"),
        None,
        "no attempt on an expired lease"
    );
});

both_backends!(claims_only_take_providers_this_replica_offers, |ledger| {
    ledger
        .insert(new_upload("u1", None, None, 10))
        .await
        .expect("insert");
    let mut other = new_upload("u2", None, None, 10);
    other.provider = "sila".into();
    ledger.insert(other).await.expect("insert");
    let claimed = ledger
        .claim_due(&lease("a", 1000), 20, 10, &["sila".to_string()])
        .await
        .expect("claim");
    assert_eq!(
        claimed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["u2"]
    );
    assert!(ledger
        .claim_due(&lease("a", 1000), 20, 10, &[])
        .await
        .expect("claim")
        .is_empty());
});

/// A ledger as docgate wrote it before versioned migrations: the same tables, no
/// `_sqlx_migrations`, and ownership in `upload_refs` (where one OST user could belong to
/// two tenants).
const BEFORE_VERSIONS: &str = "
    CREATE TABLE uploads (
        id TEXT PRIMARY KEY, tenant TEXT NOT NULL, provider TEXT NOT NULL, idempotency_key TEXT,
        fingerprint TEXT NOT NULL, status TEXT NOT NULL, prepared TEXT NOT NULL,
        documents TEXT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0, next_attempt_at BIGINT,
        lease_owner TEXT, lease_until BIGINT, last_upstream_status BIGINT, last_error TEXT,
        provider_reference TEXT, problem TEXT, created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL, delivered_at BIGINT, notify_state TEXT NOT NULL,
        notify_attempts BIGINT NOT NULL DEFAULT 0, notify_next_at BIGINT,
        spool_removed BIGINT NOT NULL DEFAULT 0);
    CREATE UNIQUE INDEX uploads_idempotency ON uploads (tenant, idempotency_key);
    CREATE TABLE upload_refs (provider TEXT NOT NULL, reference TEXT NOT NULL,
        tenant TEXT NOT NULL, upload_id TEXT NOT NULL, PRIMARY KEY (provider, reference, tenant));
    CREATE TABLE provider_events (provider TEXT NOT NULL, event_id TEXT NOT NULL,
        name TEXT NOT NULL, received_at BIGINT NOT NULL, payload TEXT NOT NULL,
        PRIMARY KEY (provider, event_id));
    INSERT INTO uploads (id, tenant, provider, fingerprint, status, prepared, documents,
        created_at, updated_at, notify_state)
        VALUES ('old-1', 'acme', 'ost', 'f', 'delivered', '{}', '[]', 1, 2, 'none');
    INSERT INTO upload_refs VALUES ('ost', '4/i/abc', 'acme', 'old-1');
    INSERT INTO upload_refs VALUES ('ost', 'user:11001', 'acme', 'kyc-submit');
    INSERT INTO upload_refs VALUES ('ost', 'user:11002', 'acme', 'kyc-submit');
    INSERT INTO upload_refs VALUES ('ost', 'user:11002', 'globex', 'kyc-submit');
    INSERT INTO provider_events VALUES ('ost', 'e1', 'user_register', 3, '{}');
";

async fn assert_upgraded(ledger: &dyn Ledger) {
    let rec = ledger.get("old-1").await.expect("get").expect("kept");
    assert_eq!(rec.status, UploadStatus::Delivered);
    let owns = |t: &'static str, kind: &'static str, v: &'static str| async move {
        ledger
            .owns_ref(t, "ost", &OwnedRef::new(kind, v))
            .await
            .expect("owns")
    };
    assert!(owns("acme", "s3_key", "4/i/abc").await);
    assert!(owns("acme", "user", "11001").await);
    assert!(!owns("globex", "user", "11001").await);
    // Contested before the ownership rule: nobody's until an operator decides.
    assert!(!owns("acme", "user", "11002").await);
    assert!(!owns("globex", "user", "11002").await);
    assert!(!ledger
        .claim_ref("globex", "ost", &OwnedRef::new("user", "11002"), "kyc")
        .await
        .expect("claim"));
}

#[tokio::test]
async fn a_ledger_from_before_versioned_migrations_is_upgraded_in_place_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = SqlLedger::sqlite_url(&dir.path().join("ledger.sqlite"));
    {
        let old = sqlx::SqlitePool::connect(&url).await.expect("old sqlite");
        sqlx::raw_sql(BEFORE_VERSIONS)
            .execute(&old)
            .await
            .expect("old schema");
        old.close().await;
    }
    let ledger = SqlLedger::connect(&url).await.expect("migrates");
    assert_upgraded(&ledger).await;
    drop(ledger);
    // Opening again is a no-op.
    let again = SqlLedger::connect(&url).await.expect("reopens");
    assert_upgraded(&again).await;
}

#[tokio::test]
async fn a_ledger_from_before_versioned_migrations_is_upgraded_in_place_postgres() {
    let base = postgres_base();
    let schema = format!("ledger_upgrade_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&base).await.expect("PostgreSQL");
    admin
        .execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .expect("schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    {
        let old = sqlx::PgPool::connect(&url).await.expect("old pg");
        sqlx::raw_sql(BEFORE_VERSIONS)
            .execute(&old)
            .await
            .expect("old schema");
        old.close().await;
    }
    let ledger = SqlLedger::connect(&url).await.expect("migrates");
    assert_upgraded(&ledger).await;
}

both_backends!(
    history_records_every_attempt_and_the_outcome_in_order,
    |ledger| {
        ledger
            .insert(new_upload("u1", None, Some(lease("a", 1000)), 10))
            .await
            .expect("insert");
        let attempt =
            |n: u32, outcome: &str, status: Option<u16>, error: Option<&str>| AttemptRecord {
                attempt: n,
                started_at: 10 + i64::from(n),
                duration_ms: 7,
                outcome: outcome.into(),
                upstream_status: status,
                error: error.map(str::to_owned),
                not_counted: false,
            };
        assert!(ledger
            .record_attempt(
                "u1",
                "a:t",
                attempt(1, "retry_later", Some(500), Some("500"))
            )
            .await
            .expect("record"));
        assert!(
            !ledger
                .record_attempt(
                    "u1",
                    "someone-else:t",
                    attempt(1, "retry_later", None, None)
                )
                .await
                .expect("record"),
            "only the lease holder writes the history"
        );
        let fin = Finish::delivered(UploadStatus::Delivered, json!({}), Vec::new(), Some(204))
            .after(attempt(2, "delivered", Some(204), None));
        assert!(ledger
            .finish("u1", "a:t", fin)
            .await
            .expect("finish")
            .is_some());
        let history = ledger.history("u1").await.expect("history");
        let kinds: Vec<&str> = history.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["received", "attempt", "attempt", "delivered"]);
        assert_eq!(history[1].detail["upstream_status"], 500);
        assert_eq!(history[1].detail["error"], "500");
        assert_eq!(history[2].detail["attempt"], 2);
        assert_eq!(history[2].detail["duration_ms"], 7);
        let seqs: Vec<u64> = history.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
    }
);

/// Concurrent writes are each answered only after their batch commits, and a failing write
/// does not take its batch down with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sqlite_writes_are_committed_together_and_fail_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Arc::new(sqlite(&dir).await);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                ledger
                    .insert(new_upload(&format!("u{i}"), None, None, i))
                    .await
                    .expect("insert")
            })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.expect("task"), Inserted::New(_)));
    }
    // The same id again is a constraint violation: an error for that write only.
    let dup = ledger.insert(new_upload("u1", None, None, 1)).await;
    assert!(dup.is_err());
    let after = ledger.insert(new_upload("u-after", None, None, 1)).await;
    assert!(matches!(after, Ok(Inserted::New(_))), "{after:?}");
    // Every write is durable: a fresh connection sees all of them.
    drop(ledger);
    let reopened = sqlite(&dir).await;
    for i in 0..200 {
        assert!(reopened.get(&format!("u{i}")).await.expect("get").is_some());
    }
}

/// Failing writes inside a busy batch (each in its own savepoint, the steps between writes
/// sent together) undo only themselves: the writes around them commit, with their history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_writes_inside_a_batch_are_undone_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Arc::new(sqlite(&dir).await);
    failing_writes_are_undone_alone(ledger, || sqlite(&dir)).await;
}

/// The same on PostgreSQL, whose writes run on the writer tasks' kept connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_writes_inside_a_postgres_batch_are_undone_alone() {
    let (url, _) = postgres_url().await;
    let connect = || async { SqlLedger::connect(&url).await.expect("connect ledger") };
    let ledger = Arc::new(connect().await);
    failing_writes_are_undone_alone(ledger, connect).await;
}

/// A PostgreSQL writer keeps its connection between writes. One cut while idle (the server
/// restarted, a proxy timed it out) is found at the next `BEGIN` and replaced before the
/// write ran: the writes succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_writer_whose_connection_was_cut_opens_another() {
    let (url, app) = postgres_url().await;
    let ledger = SqlLedger::connect(&url).await.expect("connect ledger");
    let writers = docgate_server::ledger::pg_writer::WRITERS;
    let count = i64::try_from(writers).expect("writers");
    // Sequential writes: the writer tasks take turns, and each opens its connection.
    for i in 0..count {
        let id = format!("before{i}");
        ledger
            .insert(new_upload(&id, None, None, i))
            .await
            .expect("insert");
    }
    let admin = postgres_admin().await;
    let cut: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&app)
    .fetch_all(&admin)
    .await
    .expect("terminate");
    assert!(
        cut.len() >= writers,
        "every writer's connection was open: {cut:?}"
    );
    for i in 0..count {
        let id = format!("after{i}");
        let inserted = ledger.insert(new_upload(&id, None, None, i)).await;
        assert!(
            matches!(inserted, Ok(Inserted::New(_))),
            "{id}: {inserted:?}"
        );
        assert!(ledger.get(&id).await.expect("get").is_some(), "{id}");
    }
}

/// A write held up by a lock on the server (another replica's stalled transaction, an
/// operator's `LOCK TABLE`) is ended by the server's lock timeout: its caller hears a
/// retryable error well before the writer would give up its connection, and the writers
/// carry on once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_write_stuck_behind_a_lock_fails_in_bounded_time() {
    let (url, schema) = postgres_url().await;
    let ledger = SqlLedger::connect(&url).await.expect("connect ledger");
    let admin = postgres_admin().await;
    let mut holder = admin.begin().await.expect("begin");
    sqlx::query(&format!("LOCK TABLE {schema}.uploads IN EXCLUSIVE MODE"))
        .execute(&mut *holder)
        .await
        .expect("lock");
    let started = std::time::Instant::now();
    let stuck = ledger.insert(new_upload("stuck", None, None, 1)).await;
    let waited = started.elapsed();
    let err = stuck.expect_err("a write behind the lock fails");
    assert!(err.retryable(), "{err}");
    assert!(
        waited < docgate_server::ledger::pg_writer::WRITE_TIMEOUT,
        "the server ended the wait, not the writer's own timeout: {waited:?}"
    );
    holder.commit().await.expect("release the lock");
    let after = ledger.insert(new_upload("after", None, None, 2)).await;
    assert!(matches!(after, Ok(Inserted::New(_))), "{after:?}");
    assert!(ledger.get("stuck").await.expect("get").is_none());
}

async fn failing_writes_are_undone_alone<R, F>(ledger: Arc<SqlLedger>, reopen: R)
where
    R: FnOnce() -> F,
    F: std::future::Future<Output = SqlLedger>,
{
    for i in 0..10 {
        ledger
            .insert(new_upload(&format!("taken{i}"), None, None, i))
            .await
            .expect("insert");
    }
    let tasks: Vec<_> = (0..120)
        .map(|i| {
            let ledger = ledger.clone();
            // Every twelfth write reuses a taken id: a constraint violation mid-batch.
            let id = if i % 12 == 0 {
                format!("taken{}", i / 12)
            } else {
                format!("fresh{i}")
            };
            tokio::spawn(async move {
                (
                    id.clone(),
                    ledger.insert(new_upload(&id, None, None, i)).await,
                )
            })
        })
        .collect();
    let mut failed = 0;
    for t in tasks {
        let (id, result) = t.await.expect("task");
        if id.starts_with("taken") {
            assert!(result.is_err(), "{id}: {result:?}");
            failed += 1;
        } else {
            assert!(matches!(result, Ok(Inserted::New(_))), "{id}: {result:?}");
        }
    }
    assert_eq!(failed, 10);
    drop(ledger);
    let reopened = reopen().await;
    for i in (0..120).filter(|i| i % 12 != 0) {
        let id = format!("fresh{i}");
        assert!(reopened.get(&id).await.expect("get").is_some(), "{id}");
        let history = reopened.history(&id).await.expect("history");
        assert_eq!(history.len(), 1, "{id}: {history:?}");
    }
    for i in 0..10 {
        let history = reopened
            .history(&format!("taken{i}"))
            .await
            .expect("history");
        assert_eq!(history.len(), 1, "taken{i}: the failed write left no event");
    }
}

/// An open upload session of tenant acme, expiring at `expires_at`, with one slot.
fn session_rec(id: &str, expires_at: i64) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        tenant: "acme".into(),
        provider: "taler".into(),
        token_hash: format!("hash-{id}"),
        fields: [(
            "payto".to_owned(),
            "payto://iban/DE89370400440532013000?receiver-name=Erika%20Mustermann".to_owned(),
        )]
        .into_iter()
        .collect(),
        slots: vec!["file".into()],
        max_bytes: None,
        origin: None,
        state: SessionState::Open,
        upload_id: format!("upload-{id}"),
        created_at: 0,
        expires_at,
    }
}

/// A resumable upload of 100 bytes for `session`'s slot.
fn tus_rec(id: &str, session: &str) -> TusRecord {
    TusRecord {
        id: id.into(),
        session_id: session.into(),
        slot: "file".into(),
        length: Some(100),
        received: 0,
        filename: Some("Erika Mustermann passport.pdf".into()),
        filetype: Some("application/pdf".into()),
        pieces: Vec::new(),
        state: TusState::Receiving,
        meta: None,
        created_at: 1,
        updated_at: 1,
    }
}

/// Session `s1` (open, expiring at `expires_at`) with document `t1` receiving.
async fn open_session_with_document(ledger: &dyn Ledger, expires_at: i64) {
    ledger
        .create_session(session_rec("s1", expires_at))
        .await
        .expect("session");
    assert_eq!(
        ledger.create_tus(tus_rec("t1", "s1")).await.expect("tus"),
        TusCreated::Created { replaced: None }
    );
}

/// Ask for document `t1`'s lock at offset 0 for `owner`, until `until`, at time `now`.
async fn lock_t1(ledger: &dyn Ledger, owner: &str, until: i64, now: i64) -> TusLock {
    ledger
        .lock_tus("t1", owner, until, 0, now)
        .await
        .expect("lock")
}

fn piece(key: &str, len: u64) -> docgate_core::spool::Piece {
    docgate_core::spool::Piece {
        key: key.into(),
        len,
    }
}

// Two identical PATCHes (a tus client retrying one still in flight): on PostgreSQL both
// read the document unlocked, then both took the lock, and the loser removed the winner's
// piece from an S3 spool.
both_backends!(
    regression_two_requests_racing_for_a_tus_lock_cannot_both_take_it,
    |ledger| {
        open_session_with_document(&*ledger, 10_000).await;
        for round in 0..30 {
            let (a, b) = (format!("a:{round}"), format!("b:{round}"));
            let (first, second) = tokio::join!(
                lock_t1(&*ledger, &a, 5000, 2),
                lock_t1(&*ledger, &b, 5000, 2)
            );
            let outcomes = [first, second];
            let taken = outcomes.iter().filter(|o| **o == TusLock::Taken).count();
            assert_eq!(taken, 1, "round {round}: {outcomes:?}");
            for owner in [&a, &b] {
                ledger.unlock_tus("t1", owner).await.expect("unlock");
            }
        }
    }
);

// A browser whose creation's answer never arrived (its connection dropped) has no Location
// to resume or terminate: its next creation for the slot heard 409 `slot_taken` until the
// session expired.
both_backends!(
    regression_a_creation_replaces_the_slot_s_unlocked_receiving_document,
    |ledger| {
        open_session_with_document(&*ledger, 10_000).await;
        assert_eq!(lock_t1(&*ledger, "n:1", 5000, 2).await, TusLock::Taken);
        assert!(ledger
            .add_piece("t1", "n:1", Some(piece("p0", 50)), None, None, 3)
            .await
            .expect("piece"));
        let Ok(TusCreated::Created {
            replaced: Some(old),
        }) = ledger.create_tus(tus_rec("t2", "s1")).await
        else {
            panic!("t2 replaces t1");
        };
        assert_eq!((old.id.as_str(), old.pieces), ("t1", vec![piece("p0", 50)]));
        let t1 = ledger.tus("t1").await.expect("tus").expect("there");
        assert_eq!(t1.state, TusState::Terminated);
        assert_eq!(
            ledger
                .lock_tus("t1", "n:2", 5000, 50, 4)
                .await
                .expect("lock"),
            TusLock::Gone,
            "the replaced document takes no more bytes"
        );
        // A document a PATCH is writing to is not replaced, nor a complete one.
        let mut t2 = ledger
            .lock_tus("t2", "n:3", 5000, 0, 4)
            .await
            .expect("lock");
        assert_eq!(t2, TusLock::Taken);
        assert_eq!(
            ledger.create_tus(tus_rec("t3", "s1")).await.expect("tus"),
            TusCreated::SlotTaken { id: "t2".into() }
        );
        // Its lock expired (the PATCH's replica died): replaced.
        let mut late = tus_rec("t3", "s1");
        late.created_at = 5000;
        assert!(matches!(
            ledger.create_tus(late).await.expect("tus"),
            TusCreated::Created { replaced: Some(_) }
        ));
        t2 = ledger
            .lock_tus("t3", "n:4", 9000, 0, 5001)
            .await
            .expect("lock");
        assert_eq!(t2, TusLock::Taken);
        assert!(ledger
            .add_piece(
                "t3",
                "n:4",
                Some(piece("p1", 100)),
                Some(100),
                Some(doc("file").meta),
                5002
            )
            .await
            .expect("piece"));
        assert_eq!(
            ledger.create_tus(tus_rec("t4", "s1")).await.expect("tus"),
            TusCreated::SlotTaken { id: "t3".into() }
        );
    }
);

both_backends!(
    regression_a_termination_cannot_end_a_document_its_session_is_accepting,
    |ledger| {
        open_session_with_document(&*ledger, 10_000).await;
        assert_eq!(lock_t1(&*ledger, "n:1", 5000, 2).await, TusLock::Taken);
        assert!(ledger
            .add_piece(
                "t1",
                "n:1",
                Some(piece("p0", 100)),
                Some(100),
                Some(doc("file").meta),
                3
            )
            .await
            .expect("piece"));
        // The browser's DELETE looked the session up while it was open; the acceptance
        // moves it on before the DELETE's write runs.
        assert!(ledger
            .session_state("s1", &[SessionState::Open], SessionState::Completing)
            .await
            .expect("take"));
        assert_eq!(
            ledger
                .end_tus("t1", TusState::Terminated, true, 4)
                .await
                .expect("end"),
            None,
            "a document being accepted keeps its bytes"
        );
        let kept = ledger.tus("t1").await.expect("tus").expect("there");
        assert_eq!(kept.state, TusState::Complete);
        assert_eq!(kept.pieces, vec![piece("p0", 100)]);
        // No new document, and no new bytes, while the session is not open.
        assert_eq!(
            ledger.create_tus(tus_rec("t2", "s1")).await.expect("tus"),
            TusCreated::SessionClosed
        );
        // Back to open (the acceptance failed): the client may terminate it again.
        assert!(ledger
            .session_state("s1", &[SessionState::Completing], SessionState::Open)
            .await
            .expect("reopen"));
        let ended = ledger
            .end_tus("t1", TusState::Terminated, true, 5)
            .await
            .expect("end")
            .expect("ended while open");
        assert_eq!(ended.pieces, vec![piece("p0", 100)]);
    }
);

both_backends!(
    regression_a_piece_that_ends_after_its_session_expired_is_not_recorded,
    |ledger| {
        open_session_with_document(&*ledger, 1000).await;
        assert_eq!(lock_t1(&*ledger, "n:1", 60_000, 500).await, TusLock::Taken);
        // The session expires while the PATCH streams its piece.
        let expired = ledger.expire_sessions(2000, 10).await.expect("expire");
        assert_eq!(expired.len(), 1);
        assert!(
            !ledger
                .add_piece("t1", "n:1", Some(piece("p0", 100)), Some(100), None, 2100)
                .await
                .expect("piece"),
            "the piece of an expired session's upload is refused"
        );
        let rec = ledger.tus("t1").await.expect("tus").expect("there");
        assert_eq!(rec.state, TusState::Terminated);
        assert_eq!(rec.received, 0);
        assert!(rec.pieces.is_empty());
        // Expiry keeps no personal data either.
        assert_eq!(rec.filename, None);
        let session = ledger.session("s1").await.expect("get").expect("there");
        assert_eq!(session.state, SessionState::Expired);
        assert!(session.fields.is_empty(), "{:?}", session.fields);
    }
);

both_backends!(a_revoked_session_keeps_no_personal_data, |ledger| {
    open_session_with_document(&*ledger, 10_000).await;
    assert!(ledger
        .session_state("s1", &[SessionState::Open], SessionState::Revoked)
        .await
        .expect("revoke"));
    let session = ledger.session("s1").await.expect("get").expect("there");
    assert!(session.fields.is_empty(), "{:?}", session.fields);
    let rec = ledger.tus("t1").await.expect("tus").expect("there");
    assert_eq!((rec.filename, rec.meta), (None, None));
});

both_backends!(
    a_restart_frees_the_upload_locks_of_the_process_before_it,
    |ledger| {
        open_session_with_document(&*ledger, i64::MAX).await;
        assert_eq!(lock_t1(&*ledger, "old:1", 60_000, 10).await, TusLock::Taken);
        assert_eq!(lock_t1(&*ledger, "new:1", 60_000, 20).await, TusLock::Busy);
        ledger.release_all(30).await.expect("release");
        assert_eq!(
            lock_t1(&*ledger, "new:1", 60_000, 40).await,
            TusLock::Taken,
            "the dead process's PATCH holds nothing after the restart"
        );
    }
);

both_backends!(
    an_upload_for_another_tenant_s_customer_is_not_recorded,
    |ledger| {
        let customer = OwnedRef::hashed("account", "payto://iban/DE89370400440532013000");
        let mut first = new_upload("u1", None, None, 1000);
        first.subjects = vec![claimed(customer.clone())];
        assert!(matches!(
            ledger.insert(first).await.expect("insert"),
            Inserted::New(_)
        ));
        let mut other = new_upload("u2", None, None, 1001);
        other.tenant = "globex".into();
        other.subjects = vec![
            claimed(OwnedRef::new("account", "its own")),
            claimed(customer.clone()),
        ];
        assert!(matches!(
            ledger.insert(other).await.expect("insert"),
            Inserted::NotOwner(1)
        ));
        assert_eq!(
            ledger.get("u2").await.expect("get"),
            None,
            "nothing recorded"
        );
        let mut again = new_upload("u3", None, None, 1002);
        again.subjects = vec![claimed(customer.clone())];
        assert!(
            matches!(
                ledger.insert(again).await.expect("insert"),
                Inserted::New(_)
            ),
            "its owner uploads for it again"
        );
        // Checked only (a customer a browser named): another tenant's is refused all the
        // same; one nobody has is uploaded for and stays nobody's.
        let mut named = new_upload("u4", None, None, 1003);
        named.tenant = "globex".into();
        named.subjects = vec![checked(customer)];
        assert!(matches!(
            ledger.insert(named).await.expect("insert"),
            Inserted::NotOwner(0)
        ));
        let fresh = OwnedRef::hashed("account", "payto://iban/GB33BUKB20201555555555");
        let mut named = new_upload("u5", None, None, 1004);
        named.subjects = vec![checked(fresh.clone())];
        assert!(matches!(
            ledger.insert(named).await.expect("insert"),
            Inserted::New(_)
        ));
        assert!(
            ledger
                .claim_ref("globex", "taler", &fresh, "upload")
                .await
                .expect("claim"),
            "not claimed by the upload that named it"
        );
    }
);

fn claimed(subject: OwnedRef) -> UploadSubject {
    UploadSubject {
        subject,
        claim: true,
    }
}

fn checked(subject: OwnedRef) -> UploadSubject {
    UploadSubject {
        subject,
        claim: false,
    }
}

/// Session `s1`, open, then taken by a request completing it.
async fn session_being_completed(ledger: &dyn Ledger) {
    ledger
        .create_session(session_rec("s1", 10_000))
        .await
        .expect("session");
    assert!(ledger
        .session_state("s1", &[SessionState::Open], SessionState::Completing)
        .await
        .expect("take"));
}

both_backends!(
    a_session_is_accepted_in_the_write_that_records_its_upload,
    |ledger| {
        session_being_completed(&*ledger).await;
        let mut upload = new_upload("upload-s1", None, None, 1000);
        upload.session = Some("s1".into());
        assert!(matches!(
            ledger.insert(upload).await.expect("insert"),
            Inserted::New(_)
        ));
        let session = ledger.session("s1").await.expect("get").expect("there");
        assert_eq!(
            session.state,
            SessionState::Accepted,
            "no crash can split the two"
        );
    }
);

both_backends!(
    an_upload_is_not_recorded_for_a_session_its_request_no_longer_holds,
    |ledger| {
        // Taken, then handed back (its request was dropped) before the upload's record ran.
        session_being_completed(&*ledger).await;
        assert!(ledger
            .session_state("s1", &[SessionState::Completing], SessionState::Open)
            .await
            .expect("hand back"));
        let mut upload = new_upload("upload-s1", None, None, 1000);
        upload.session = Some("s1".into());
        let refused = ledger.insert(upload).await;
        assert!(
            matches!(refused, Err(LedgerError::SessionNotHeld)),
            "{refused:?}"
        );
        assert!(ledger.get("upload-s1").await.expect("get").is_none());
        let session = ledger.session("s1").await.expect("get").expect("there");
        assert_eq!(
            session.state,
            SessionState::Open,
            "free for the next request"
        );
    }
);

both_backends!(
    regression_a_session_left_completing_by_a_crash_is_not_stuck_for_ever,
    |ledger| {
        ledger
            .create_session(session_rec("s1", 10_000))
            .await
            .expect("session");
        ledger
            .create_session(session_rec("s2", 10_000))
            .await
            .expect("session");
        for id in ["s1", "s2"] {
            assert!(ledger
                .session_state(id, &[SessionState::Open], SessionState::Completing)
                .await
                .expect("take"));
        }
        // Several replicas: an abandoned completion expires, an hour after the session would.
        assert!(ledger
            .expire_sessions(20_000, 10)
            .await
            .expect("expire")
            .is_empty());
        let expired = ledger
            .expire_sessions(10_000 + 3_600_001, 1)
            .await
            .expect("expire");
        assert_eq!(expired.len(), 1);
        // One replica: its restart opens the other again, for the browser to complete.
        ledger.release_all(30).await.expect("release");
        let states: Vec<SessionState> =
            futures_util::future::join_all(["s1", "s2"].map(|id| ledger.session(id)))
                .await
                .into_iter()
                .map(|s| s.expect("get").expect("there").state)
                .collect();
        assert!(states.contains(&SessionState::Expired), "{states:?}");
        assert!(states.contains(&SessionState::Open), "{states:?}");
    }
);

// Regression: each creation replacing an unlocked document kept the old row, and every row
// is read whenever the session's documents are: a token holder creating in a loop grew them
// without bound for the session's whole life.
both_backends!(
    regression_a_slot_is_created_a_bounded_number_of_times,
    |ledger| {
        open_session_with_document(&*ledger, i64::MAX).await;
        for n in 2..=docgate_server::ledger::MAX_TUS_CREATIONS_PER_SLOT {
            let created = ledger
                .create_tus(tus_rec(&format!("t{n}"), "s1"))
                .await
                .expect("tus");
            assert!(
                matches!(created, TusCreated::Created { replaced: Some(_) }),
                "{n}: {created:?}"
            );
        }
        let last = format!("t{}", docgate_server::ledger::MAX_TUS_CREATIONS_PER_SLOT);
        // The slot's live document is pointed at, to be resumed…
        assert_eq!(
            ledger
                .create_tus(tus_rec("t-next", "s1"))
                .await
                .expect("tus"),
            TusCreated::SlotTaken { id: last.clone() }
        );
        // …and once it is gone too, nothing more is made.
        ledger
            .end_tus(&last, TusState::Terminated, true, 5)
            .await
            .expect("terminate")
            .expect("it was live");
        assert_eq!(
            ledger
                .create_tus(tus_rec("t-next", "s1"))
                .await
                .expect("tus"),
            TusCreated::TooMany {
                limit: docgate_server::ledger::MAX_TUS_CREATIONS_PER_SLOT
            }
        );
    }
);

// Regression: uploads for a provider removed from every replica's configuration were never
// claimed, never failed by `max_age`: stuck for ever, their personal data kept. Past the
// give-up age they fail (and go with the retention sweep).
both_backends!(
    regression_uploads_for_a_provider_no_replica_has_fail_past_their_age,
    |ledger| {
        let mut gone = new_upload("u-gone", None, None, 10);
        gone.provider = "gone".into();
        ledger.insert(gone).await.expect("insert");
        let mut young = new_upload("u-young", None, None, 500);
        young.provider = "gone".into();
        ledger.insert(young).await.expect("insert");
        ledger
            .insert(new_upload("u-taler", None, None, 10))
            .await
            .expect("insert");
        let known = ["taler".to_owned()];
        assert_eq!(
            ledger.fail_stranded(&known, 100, 1000).await.expect("fail"),
            1
        );
        let rec = ledger.get("u-gone").await.expect("get").expect("exists");
        assert_eq!(rec.status, UploadStatus::Failed);
        assert_eq!(
            rec.problem.as_ref().and_then(|p| p.get("code")).cloned(),
            Some(json!("delivery_failed"))
        );
        for id in ["u-young", "u-taler"] {
            let rec = ledger.get(id).await.expect("get").expect("exists");
            assert_eq!(rec.status, UploadStatus::Received, "{id}");
        }
        assert_eq!(due_ids(&*ledger, 2000).await, vec!["u-gone"]);
        assert_eq!(
            ledger
                .fail_stranded(&known, 100, 1000)
                .await
                .expect("again"),
            0
        );
    }
);
