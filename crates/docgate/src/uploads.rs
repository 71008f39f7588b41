//! `docgate uploads list|show|events|retry|cancel|erase`: the operations API from a shell.
//!
//! A thin client: every decision is the gateway's; this prints its answers as a table (or
//! as the gateway's JSON with `--json`) and exits non-zero on a problem answer. The API key
//! comes from `DOCGATE_API_KEY` only: a key on the command line ends up in shell history and
//! in every process listing.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Args, Debug)]
pub struct UploadsArgs {
    /// The gateway's base URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Print the gateway's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: UploadsCommand,
}

#[derive(Subcommand, Debug)]
enum UploadsCommand {
    /// The tenant's uploads, newest first.
    List {
        /// received, delivering, delivered, duplicate, rejected, retry_scheduled, failed,
        /// canceled
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        /// RFC 3339 time, inclusive.
        #[arg(long)]
        created_after: Option<String>,
        /// RFC 3339 time, exclusive.
        #[arg(long)]
        created_before: Option<String>,
        /// Items per page (1–500).
        #[arg(long)]
        limit: Option<u32>,
        /// Continue from a previous page's `next_cursor`.
        #[arg(long)]
        cursor: Option<String>,
        /// Follow `next_cursor` until the last page.
        #[arg(long)]
        all: bool,
    },
    /// One upload's receipt.
    Show { id: String },
    /// One upload's history.
    Events { id: String },
    /// Deliver a failed or rejected upload again (same id).
    Retry { id: String },
    /// Stop an upload's delivery.
    Cancel { id: String },
    /// Erase an upload's documents and personal data, keeping a tombstone.
    Erase { id: String },
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Value> {
        let res = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("reaching the gateway at {}", self.base))?;
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        if status.is_client_error() || status.is_server_error() {
            let code = value["code"].as_str().unwrap_or("?");
            let detail = value["detail"]
                .as_str()
                .or_else(|| value["title"].as_str())
                .unwrap_or("");
            bail!("the gateway answered {status} ({code}): {detail}");
        }
        Ok(value)
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Columns padded to their widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(headers.iter().map(|h| (*h).to_owned()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

fn list_rows(page: &Value) -> Vec<Vec<String>> {
    page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    vec![
                        text(&i["id"]),
                        text(&i["provider"]),
                        text(&i["status"]),
                        text(&i["attempts"]),
                        text(&i["documents"]),
                        text(&i["created_at"]),
                        text(&i["delivered_at"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default()
}

fn receipt_lines(r: &Value) -> String {
    let mut rows = Vec::new();
    for key in [
        "id",
        "provider",
        "status",
        "attempts",
        "created_at",
        "delivered_at",
        "next_attempt_at",
        "last_error",
        "last_upstream_status",
        "cancel_requested",
        "erased_at",
    ] {
        if let Some(v) = r.get(key) {
            rows.push(vec![key.to_owned(), text(v)]);
        }
    }
    if let Some(code) = r.get("problem").and_then(|p| p.get("code")) {
        rows.push(vec!["problem".to_owned(), text(code)]);
    }
    if let Some(reference) = r.get("provider_reference").filter(|v| !v.is_null()) {
        rows.push(vec!["provider_reference".to_owned(), text(reference)]);
    }
    let mut out = table(&["field", "value"], &rows);
    if let Some(docs) = r["documents"].as_array().filter(|d| !d.is_empty()) {
        let doc_rows: Vec<Vec<String>> = docs
            .iter()
            .map(|d| {
                vec![
                    text(&d["slot"]),
                    text(&d["filename"]),
                    text(&d["size"]),
                    text(&d["media_type"]),
                    text(&d["sha256"]),
                ]
            })
            .collect();
        out.push_str("\n\n");
        out.push_str(&table(
            &["slot", "filename", "size", "media_type", "sha256"],
            &doc_rows,
        ));
    }
    out
}

fn event_rows(history: &Value) -> Vec<Vec<String>> {
    history["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    let detail = match &e["detail"] {
                        Value::Object(m) => m
                            .iter()
                            .filter(|(_, v)| !v.is_null())
                            .map(|(k, v)| format!("{k}={}", text(v)))
                            .collect::<Vec<_>>()
                            .join(" "),
                        other => text(other),
                    };
                    vec![text(&e["seq"]), text(&e["at"]), text(&e["kind"]), detail]
                })
                .collect()
        })
        .unwrap_or_default()
}

fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = url_encode_pairs(pairs);
    if !q.is_empty() {
        q.insert(0, '?');
    }
    q
}

/// `name=value&…` with values percent-encoded (times carry `+` and `:`).
fn url_encode_pairs(pairs: &[(&str, Option<String>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", percent(v))))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print(json: bool, value: &Value, human: impl FnOnce(&Value) -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", human(value));
    }
    Ok(())
}

/// An id goes into a URL path: refuse anything that would change the path.
fn checked_id(id: &str) -> anyhow::Result<&str> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        bail!("`{id}` is not an upload id");
    }
    Ok(id)
}

pub async fn run(args: UploadsArgs) -> anyhow::Result<()> {
    let key =
        std::env::var("DOCGATE_API_KEY").context("set DOCGATE_API_KEY to the tenant's API key")?;
    let client = Client {
        http: reqwest::Client::new(),
        base: args.url.trim_end_matches('/').to_owned(),
        key,
    };
    use reqwest::Method;
    let json = args.json;
    match args.command {
        UploadsCommand::List {
            status,
            provider,
            created_after,
            created_before,
            limit,
            cursor,
            all,
        } => {
            let filters = [
                ("status", status),
                ("provider", provider),
                ("created_after", created_after),
                ("created_before", created_before),
                ("limit", limit.map(|l| l.to_string())),
            ];
            list(&client, json, &filters, cursor, all).await
        }
        UploadsCommand::Show { id } => receipt(&client, json, Method::GET, &id, "").await,
        UploadsCommand::Events { id } => {
            let h = client
                .call(
                    Method::GET,
                    &format!("/v1/uploads/{}/events", checked_id(&id)?),
                )
                .await?;
            print(json, &h, |h| {
                table(&["seq", "at", "kind", "detail"], &event_rows(h))
            })
        }
        UploadsCommand::Retry { id } => receipt(&client, json, Method::POST, &id, "/retry").await,
        UploadsCommand::Cancel { id } => receipt(&client, json, Method::POST, &id, "/cancel").await,
        UploadsCommand::Erase { id } => receipt(&client, json, Method::DELETE, &id, "").await,
    }
}

/// Call `/v1/uploads/<id><action>` and print the receipt the gateway answers with.
async fn receipt(
    client: &Client,
    json: bool,
    method: reqwest::Method,
    id: &str,
    action: &str,
) -> anyhow::Result<()> {
    let r = client
        .call(method, &format!("/v1/uploads/{}{action}", checked_id(id)?))
        .await?;
    print(json, &r, receipt_lines)
}

/// `uploads list`: one page, or with `all` every page from `cursor` on.
async fn list(
    client: &Client,
    json: bool,
    filters: &[(&str, Option<String>)],
    mut cursor: Option<String>,
    all: bool,
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let mut pages = Vec::new();
    loop {
        let mut pairs = filters.to_vec();
        pairs.push(("cursor", cursor.clone()));
        let q = query_string(&pairs);
        let page = client
            .call(reqwest::Method::GET, &format!("/v1/uploads{q}"))
            .await?;
        rows.extend(list_rows(&page));
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        pages.push(page);
        if !all || cursor.is_none() {
            break;
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&merged_pages(pages))?);
    } else {
        println!(
            "{}",
            table(
                &[
                    "id",
                    "provider",
                    "status",
                    "attempts",
                    "docs",
                    "created_at",
                    "delivered_at"
                ],
                &rows
            )
        );
        if let Some(c) = &cursor {
            println!("more: --cursor {c}");
        }
    }
    Ok(())
}

/// A single page as the gateway sent it; several as one page of all their items.
fn merged_pages(mut pages: Vec<Value>) -> Value {
    if pages.len() == 1 {
        return pages.remove(0);
    }
    let items: Vec<Value> = pages
        .iter()
        .flat_map(|p| p["items"].as_array().cloned().unwrap_or_default())
        .collect();
    serde_json::json!({ "items": items, "next_cursor": Value::Null })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded_and_absent_ones_left_out() {
        let q = query_string(&[
            ("status", Some("failed".into())),
            ("provider", None),
            ("created_after", Some("2025-01-31T12:00:00+01:00".into())),
        ]);
        assert_eq!(
            q,
            "?status=failed&created_after=2025-01-31T12%3A00%3A00%2B01%3A00"
        );
        assert_eq!(query_string(&[("limit", None)]), "");
    }

    #[test]
    fn ids_that_would_change_the_path_are_refused() {
        assert!(checked_id("5f0c1e2a-0000-4000-8000-000000000000").is_ok());
        assert!(checked_id("../metrics").is_err());
        assert!(checked_id("a/b").is_err());
        assert!(checked_id("").is_err());
    }

    #[test]
    fn tables_pad_columns_to_the_widest_cell() {
        let t = table(&["a", "bb"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "a    bb\nxyz  1");
    }
}
