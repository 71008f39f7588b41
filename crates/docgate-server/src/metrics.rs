//! Prometheus metrics (text exposition format, hand-written: a few counters do not need a
//! metrics framework).
//!
//! Counters live in this process; upload counts by status come from the ledger at scrape
//! time, so every replica reports the same, durable truth for them.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        atomic::{AtomicI64, Ordering},
        Mutex,
    },
    time::Duration,
};

/// Upper bounds (seconds) of the delivery latency histogram.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    /// (provider) → bytes
    bytes_received: BTreeMap<String, u64>,
    /// (provider, outcome) → attempts
    attempts: BTreeMap<(String, String), u64>,
    /// (code) → rejected requests
    rejections: BTreeMap<String, u64>,
    /// (provider) → latency of successful deliveries
    latency: BTreeMap<String, Histogram>,
    /// (outcome) → tenant notifications
    notifications: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    in_flight: AtomicI64,
}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn upload_started(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn bytes_received(&self, provider: &str, n: u64) {
        *self
            .lock()
            .bytes_received
            .entry(provider.to_owned())
            .or_default() += n;
    }

    pub fn rejected(&self, code: &str) {
        *self.lock().rejections.entry(code.to_owned()).or_default() += 1;
    }

    pub fn attempt(&self, provider: &str, outcome: &str, took: Duration) {
        let mut inner = self.lock();
        *inner
            .attempts
            .entry((provider.to_owned(), outcome.to_owned()))
            .or_default() += 1;
        if matches!(outcome, "delivered" | "duplicate") {
            let h = inner.latency.entry(provider.to_owned()).or_default();
            let secs = took.as_secs_f64();
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
    }

    pub fn notification(&self, outcome: &str) {
        *self
            .lock()
            .notifications
            .entry(outcome.to_owned())
            .or_default() += 1;
    }

    /// Render everything; `uploads` are the ledger's `(provider, status, count)` and
    /// `spool_bytes` the spool's disk usage, both read at scrape time.
    pub fn render(&self, uploads: &[(String, &str, u64)], spool_bytes: u64) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP docgate_uploads Uploads in the ledger by provider and status."
        );
        let _ = writeln!(out, "# TYPE docgate_uploads gauge");
        for (provider, status, n) in uploads {
            let _ = writeln!(
                out,
                "docgate_uploads{{provider=\"{}\",status=\"{status}\"}} {n}",
                escape(provider)
            );
        }
        let _ = writeln!(
            out,
            "# HELP docgate_bytes_received_total Document bytes accepted, by provider."
        );
        let _ = writeln!(out, "# TYPE docgate_bytes_received_total counter");
        for (provider, n) in &inner.bytes_received {
            let _ = writeln!(
                out,
                "docgate_bytes_received_total{{provider=\"{}\"}} {n}",
                escape(provider)
            );
        }
        let _ = writeln!(
            out,
            "# HELP docgate_delivery_attempts_total Delivery attempts by provider and outcome."
        );
        let _ = writeln!(out, "# TYPE docgate_delivery_attempts_total counter");
        for ((provider, outcome), n) in &inner.attempts {
            let _ = writeln!(
                out,
                "docgate_delivery_attempts_total{{provider=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(provider)
            );
        }
        let _ = writeln!(
            out,
            "# HELP docgate_delivery_duration_seconds Time of successful delivery attempts."
        );
        let _ = writeln!(out, "# TYPE docgate_delivery_duration_seconds histogram");
        for (provider, h) in &inner.latency {
            let p = escape(provider);
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "docgate_delivery_duration_seconds_bucket{{provider=\"{p}\",le=\"{bound}\"}} {}", h.counts[i]);
            }
            let _ = writeln!(
                out,
                "docgate_delivery_duration_seconds_bucket{{provider=\"{p}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "docgate_delivery_duration_seconds_sum{{provider=\"{p}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "docgate_delivery_duration_seconds_count{{provider=\"{p}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP docgate_rejections_total Requests refused, by problem code."
        );
        let _ = writeln!(out, "# TYPE docgate_rejections_total counter");
        for (code, n) in &inner.rejections {
            let _ = writeln!(
                out,
                "docgate_rejections_total{{code=\"{}\"}} {n}",
                escape(code)
            );
        }
        let _ = writeln!(
            out,
            "# HELP docgate_notifications_total Tenant notifications by outcome."
        );
        let _ = writeln!(out, "# TYPE docgate_notifications_total counter");
        for (outcome, n) in &inner.notifications {
            let _ = writeln!(
                out,
                "docgate_notifications_total{{outcome=\"{}\"}} {n}",
                escape(outcome)
            );
        }
        let _ = writeln!(
            out,
            "# HELP docgate_uploads_in_flight Uploads being received right now."
        );
        let _ = writeln!(out, "# TYPE docgate_uploads_in_flight gauge");
        let _ = writeln!(
            out,
            "docgate_uploads_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP docgate_spool_bytes Bytes of documents waiting in the spool."
        );
        let _ = writeln!(out, "# TYPE docgate_spool_bytes gauge");
        let _ = writeln!(out, "docgate_spool_bytes {spool_bytes}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let m = Metrics::default();
        m.bytes_received("taler", 10);
        m.attempt("taler", "delivered", Duration::from_millis(30));
        m.attempt("taler", "retry_later", Duration::from_millis(5));
        m.rejected("payload_too_large");
        let guard = m.upload_started();
        let text = m.render(&[("taler".into(), "delivered", 1)], 42);
        drop(guard);
        assert!(text.contains("docgate_uploads{provider=\"taler\",status=\"delivered\"} 1"));
        assert!(text.contains("docgate_bytes_received_total{provider=\"taler\"} 10"));
        assert!(text.contains(
            "docgate_delivery_attempts_total{provider=\"taler\",outcome=\"retry_later\"} 1"
        ));
        assert!(text.contains(
            "docgate_delivery_duration_seconds_bucket{provider=\"taler\",le=\"0.05\"} 1"
        ));
        assert!(text.contains(
            "docgate_delivery_duration_seconds_bucket{provider=\"taler\",le=\"0.025\"} 0"
        ));
        assert!(text.contains("docgate_uploads_in_flight 1"));
        assert!(text.contains("docgate_spool_bytes 42"));
        assert!(m.render(&[], 0).contains("docgate_uploads_in_flight 0"));
    }

    /// A metrics registry with every family populated, as a busy gateway has it.
    fn populated() -> Metrics {
        let m = Metrics::default();
        m.bytes_received("taler", 10);
        m.bytes_received("sila", 7);
        m.attempt("taler", "delivered", Duration::from_millis(30));
        m.attempt("taler", "retry_later", Duration::from_millis(5));
        m.attempt("sila", "duplicate", Duration::from_secs(2));
        m.attempt("sila", "rejected", Duration::from_millis(40));
        m.rejected("payload_too_large");
        m.rejected("payload_too_large");
        m.rejected("unsupported_media_type");
        m.notification("sent");
        m.notification("failed");
        m.notification("retry");
        m
    }

    /// Each sample as `name{labels} value` (value normalised through f64, since `1` and `1.0`
    /// are the same sample to a scraper) plus the HELP/TYPE lines, sorted: sample order within
    /// a family is not part of the format.
    fn exposition(text: &str) -> Vec<String> {
        let mut lines: Vec<String> = text
            .lines()
            .map(|line| {
                if line.starts_with('#') {
                    return line.to_owned();
                }
                let (series, value) = line.rsplit_once(' ').expect("sample has a value");
                let value: f64 = value.parse().expect("sample value is a number");
                format!("{series} {value}")
            })
            .collect();
        lines.sort();
        lines
    }

    /// The exposition rendered by the hand-written encoder this module used before
    /// prometheus-client; dashboards and alerts depend on these names, labels and types.
    const GOLDEN: &str = r#"
# HELP docgate_bytes_received_total Document bytes accepted, by provider.
# HELP docgate_delivery_attempts_total Delivery attempts by provider and outcome.
# HELP docgate_delivery_duration_seconds Time of successful delivery attempts.
# HELP docgate_notifications_total Tenant notifications by outcome.
# HELP docgate_rejections_total Requests refused, by problem code.
# HELP docgate_spool_bytes Bytes of documents waiting in the spool.
# HELP docgate_uploads Uploads in the ledger by provider and status.
# HELP docgate_uploads_in_flight Uploads being received right now.
# TYPE docgate_bytes_received_total counter
# TYPE docgate_delivery_attempts_total counter
# TYPE docgate_delivery_duration_seconds histogram
# TYPE docgate_notifications_total counter
# TYPE docgate_rejections_total counter
# TYPE docgate_spool_bytes gauge
# TYPE docgate_uploads gauge
# TYPE docgate_uploads_in_flight gauge
docgate_bytes_received_total{provider="sila"} 7
docgate_bytes_received_total{provider="taler"} 10
docgate_delivery_attempts_total{provider="sila",outcome="duplicate"} 1
docgate_delivery_attempts_total{provider="sila",outcome="rejected"} 1
docgate_delivery_attempts_total{provider="taler",outcome="delivered"} 1
docgate_delivery_attempts_total{provider="taler",outcome="retry_later"} 1
docgate_delivery_duration_seconds_bucket{provider="sila",le="+Inf"} 1
docgate_delivery_duration_seconds_bucket{provider="sila",le="0.005"} 0
docgate_delivery_duration_seconds_bucket{provider="sila",le="0.01"} 0
docgate_delivery_duration_seconds_bucket{provider="sila",le="0.025"} 0
docgate_delivery_duration_seconds_bucket{provider="sila",le="0.05"} 0
docgate_delivery_duration_seconds_bucket{provider="sila",le="0.1"} 0
docgate_delivery_duration_seconds_bucket{provider="sila",le="0.25"} 0
docgate_delivery_duration_seconds_bucket{provider="sila",le="0.5"} 0
docgate_delivery_duration_seconds_bucket{provider="sila",le="1"} 0
docgate_delivery_duration_seconds_bucket{provider="sila",le="10"} 1
docgate_delivery_duration_seconds_bucket{provider="sila",le="2.5"} 1
docgate_delivery_duration_seconds_bucket{provider="sila",le="30"} 1
docgate_delivery_duration_seconds_bucket{provider="sila",le="5"} 1
docgate_delivery_duration_seconds_bucket{provider="taler",le="+Inf"} 1
docgate_delivery_duration_seconds_bucket{provider="taler",le="0.005"} 0
docgate_delivery_duration_seconds_bucket{provider="taler",le="0.01"} 0
docgate_delivery_duration_seconds_bucket{provider="taler",le="0.025"} 0
docgate_delivery_duration_seconds_bucket{provider="taler",le="0.05"} 1
docgate_delivery_duration_seconds_bucket{provider="taler",le="0.1"} 1
docgate_delivery_duration_seconds_bucket{provider="taler",le="0.25"} 1
docgate_delivery_duration_seconds_bucket{provider="taler",le="0.5"} 1
docgate_delivery_duration_seconds_bucket{provider="taler",le="1"} 1
docgate_delivery_duration_seconds_bucket{provider="taler",le="10"} 1
docgate_delivery_duration_seconds_bucket{provider="taler",le="2.5"} 1
docgate_delivery_duration_seconds_bucket{provider="taler",le="30"} 1
docgate_delivery_duration_seconds_bucket{provider="taler",le="5"} 1
docgate_delivery_duration_seconds_count{provider="sila"} 1
docgate_delivery_duration_seconds_count{provider="taler"} 1
docgate_delivery_duration_seconds_sum{provider="sila"} 2
docgate_delivery_duration_seconds_sum{provider="taler"} 0.03
docgate_notifications_total{outcome="failed"} 1
docgate_notifications_total{outcome="retry"} 1
docgate_notifications_total{outcome="sent"} 1
docgate_rejections_total{code="payload_too_large"} 2
docgate_rejections_total{code="unsupported_media_type"} 1
docgate_spool_bytes 4096
docgate_uploads_in_flight 1
docgate_uploads{provider="sila",status="pending"} 1
docgate_uploads{provider="taler",status="delivered"} 3
"#;

    #[test]
    fn exposition_matches_the_hand_written_format() {
        let m = populated();
        let _guard = m.upload_started();
        let text = m.render(
            &[
                ("taler".into(), "delivered", 3),
                ("sila".into(), "pending", 1),
            ],
            4096,
        );
        let expected: Vec<String> = GOLDEN.trim().lines().map(str::to_owned).collect();
        assert_eq!(exposition(&text), expected, "rendered:\n{text}");
    }
}
