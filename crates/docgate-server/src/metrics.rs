//! Prometheus metrics, encoded by `prometheus-client` in the Prometheus text format 0.0.4.
//! Not OpenMetrics: that format ends with `# EOF`, has `# UNIT` lines and its own content
//! type, and scrapers configured for plain Prometheus text would refuse or misread it.
//!
//! Counters live in this process. Upload counts by status come from the ledger and the spool
//! size from the disk, both at scrape time, so every replica reports the same durable truth;
//! they are encoded from a registry built for that one scrape, so a count that left the ledger
//! leaves the output too.
//!
//! Label values must come from fixed sets, never from what a client sends (keys, file names,
//! ids): each distinct value is a series kept for the life of the process. Providers are the
//! configured ones, outcomes are `&'static str` by type, problem codes are the gateway's own.
//!
//! A new counter family is a label struct, a field registered in `Default`, and a method:
//!
//! ```text
//! #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
//! struct ReasonLabels { reason: &'static str }
//! // field:     lease_losses: Family<ReasonLabels, Counter>,
//! // Default:   lease_losses: register(&mut registry, "lease_losses", "…", Family::default()),
//! // method:    self.lease_losses.get_or_create(&ReasonLabels { reason }).inc();
//! ```
//! Name counters without `_total`: the encoder appends it (and panics in debug builds if the
//! name already has it).

use std::{sync::atomic::AtomicU64, time::Duration};

use prometheus_client::{
    encoding::{prometheus_text, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Metric, Registry},
};

/// The `Content-Type` of what [`Metrics::render`] produces.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Every family name starts with `docgate_`.
const PREFIX: &str = "docgate";

/// Upper bounds (seconds) of the delivery latency histogram.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    provider: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UploadLabels {
    provider: String,
    status: String,
}

type LatencyFamily = Family<ProviderLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Register `metric` (its handles share one value) and hand it back for the struct field.
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

#[derive(Debug)]
pub struct Metrics {
    /// Everything below, for encoding.
    registry: Registry,
    bytes_received: Family<ProviderLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    /// Latency of successful deliveries only: failures time out at very different scales.
    delivery_duration: LatencyFamily,
    rejections: Family<CodeLabels, Counter>,
    notifications: Family<OutcomeLabels, Counter>,
    /// tus events: `created`, `patch`, `checksum_mismatch`, `completed`, `terminated`.
    tus: Family<EventLabels, Counter>,
    in_flight: Gauge,
    /// Uploads waiting in line for a slot (set by the admission).
    waiting: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        Metrics {
            bytes_received: register(
                &mut registry,
                "bytes_received",
                "Document bytes accepted, by provider",
                Family::default(),
            ),
            attempts: register(
                &mut registry,
                "delivery_attempts",
                "Delivery attempts by provider and outcome",
                Family::default(),
            ),
            delivery_duration: register(
                &mut registry,
                "delivery_duration_seconds",
                "Time of successful delivery attempts",
                LatencyFamily::new_with_constructor(latency_histogram),
            ),
            rejections: register(
                &mut registry,
                "rejections",
                "Requests refused, by problem code",
                Family::default(),
            ),
            notifications: register(
                &mut registry,
                "notifications",
                "Tenant notifications by outcome",
                Family::default(),
            ),
            tus: register(
                &mut registry,
                "tus_events",
                "Resumable (tus) upload events: created, patch, checksum_mismatch, completed, terminated",
                Family::default(),
            ),
            in_flight: register(
                &mut registry,
                "uploads_in_flight",
                "Uploads being received right now",
                Gauge::default(),
            ),
            waiting: register(
                &mut registry,
                "uploads_waiting",
                "Uploads waiting in line for a slot right now",
                Gauge::default(),
            ),
            registry,
        }
    }
}

/// Counts one thing on a gauge for as long as it lives: an upload in flight, an upload
/// waiting in line.
#[derive(Debug)]
pub struct Counted<'a>(&'a Gauge);

impl<'a> Counted<'a> {
    pub fn new(gauge: &'a Gauge) -> Counted<'a> {
        gauge.inc();
        Counted(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    pub fn upload_started(&self) -> Counted<'_> {
        Counted::new(&self.in_flight)
    }

    /// The gauge of uploads waiting for a slot, for the admission to keep.
    pub fn waiting_gauge(&self) -> Gauge {
        self.waiting.clone()
    }

    pub fn bytes_received(&self, provider: &str, n: u64) {
        let labels = ProviderLabels {
            provider: provider.to_owned(),
        };
        self.bytes_received.get_or_create(&labels).inc_by(n);
    }

    /// `code` is a problem code; the gateway's are a fixed set.
    pub fn rejected(&self, code: &str) {
        let labels = CodeLabels {
            code: code.to_owned(),
        };
        self.rejections.get_or_create(&labels).inc();
    }

    pub fn attempt(&self, provider: &str, outcome: &'static str, took: Duration) {
        let labels = AttemptLabels {
            provider: provider.to_owned(),
            outcome,
        };
        self.attempts.get_or_create(&labels).inc();
        if matches!(outcome, "delivered" | "duplicate") {
            let labels = ProviderLabels {
                provider: labels.provider,
            };
            self.delivery_duration
                .get_or_create(&labels)
                .observe(took.as_secs_f64());
        }
    }

    /// A resumable-upload event (`docgate_tus_events_total{event}`).
    pub fn tus(&self, event: &'static str) {
        self.tus.get_or_create(&EventLabels { event }).inc();
    }

    pub fn notification(&self, outcome: &'static str) {
        self.notifications
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Render everything (serve it as [`CONTENT_TYPE`]); `uploads` are the ledger's
    /// `(provider, status, count)` and `spool_bytes` the spool's disk usage, both read at
    /// scrape time.
    pub fn render(&self, uploads: &[(String, &str, u64)], spool_bytes: u64) -> String {
        let mut out = String::new();
        for registry in [&scrape_time_registry(uploads, spool_bytes), &self.registry] {
            // Only the writer can fail, and a String does not; nothing here is native-only.
            if prometheus_text::encode(&mut out, registry).is_err() {
                tracing::error!("encoding metrics failed; the scrape is incomplete");
            }
        }
        out
    }
}

/// The families whose values are read at scrape time rather than counted in this process.
fn scrape_time_registry(uploads: &[(String, &str, u64)], spool_bytes: u64) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    let by_status: Family<UploadLabels, Gauge<u64, AtomicU64>> = register(
        &mut registry,
        "uploads",
        "Uploads in the ledger by provider and status",
        Family::default(),
    );
    for (provider, status, n) in uploads {
        let labels = UploadLabels {
            provider: provider.clone(),
            status: (*status).to_owned(),
        };
        by_status.get_or_create(&labels).set(*n);
    }
    let spool: Gauge<u64, AtomicU64> = register(
        &mut registry,
        "spool_bytes",
        "Bytes of documents waiting in the spool",
        Gauge::default(),
    );
    spool.set(spool_bytes);
    registry
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
# HELP docgate_uploads_waiting Uploads waiting in line for a slot right now.
# TYPE docgate_bytes_received_total counter
# TYPE docgate_delivery_attempts_total counter
# TYPE docgate_delivery_duration_seconds histogram
# TYPE docgate_notifications_total counter
# TYPE docgate_rejections_total counter
# TYPE docgate_spool_bytes gauge
# TYPE docgate_uploads gauge
# TYPE docgate_uploads_in_flight gauge
# TYPE docgate_uploads_waiting gauge
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
docgate_uploads_waiting 0
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

    #[test]
    fn ledger_counts_do_not_linger_between_scrapes() {
        let m = Metrics::default();
        let first = m.render(&[("taler".into(), "pending", 2)], 0);
        assert!(first.contains("docgate_uploads{provider=\"taler\",status=\"pending\"} 2"));
        let second = m.render(&[("taler".into(), "delivered", 2)], 0);
        assert!(!second.contains("status=\"pending\""), "{second}");
        assert!(second.contains("docgate_uploads{provider=\"taler\",status=\"delivered\"} 2"));
    }

    #[test]
    fn output_is_prometheus_text_not_openmetrics() {
        let text = populated().render(&[("taler".into(), "delivered", 1)], 1);
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
        assert!(!text.contains("# EOF"), "{text}");
        assert!(!text.contains("# UNIT"), "{text}");
        assert!(!text.contains("_total_total"), "{text}");
        assert!(text.ends_with('\n'));
    }
}
