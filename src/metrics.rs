//! Prometheus metrics, served at `/metrics` in the text format.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    pub sockets_open: IntGauge,
    pub subscriptions: IntGaugeVec,
    pub events_published: IntCounter,
    pub events_delivered: IntCounter,
    pub sockets_closed_slow: IntCounter,
    pub sockets_closed_token_queue: IntCounter,
    /// Set when the metrics are rendered, from the token counters.
    pub queued_bytes: IntGauge,
    pub commit_seconds: Histogram,
    pub batch_size: Histogram,
    pub db_mailbox: IntGauge,
    pub change_log_len: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let sockets_open = IntGauge::new("taskwire_sockets_open", "WebSocket connections open").unwrap();
        let subscriptions = IntGaugeVec::new(
            Opts::new("taskwire_subscriptions", "subscriptions held, by topic kind"),
            &["kind"],
        )
        .unwrap();
        let events_published = IntCounter::new("taskwire_events_published_total", "changes published").unwrap();
        let events_delivered =
            IntCounter::new("taskwire_events_delivered_total", "event frames handed to sessions").unwrap();
        let sockets_closed_slow = IntCounter::new(
            "taskwire_sockets_closed_slow_total",
            "sockets closed 1013 for not keeping up",
        )
        .unwrap();
        let sockets_closed_token_queue = IntCounter::new(
            "taskwire_sockets_closed_token_queue_total",
            "sockets closed 1013 because their token's sockets together had too much queued",
        )
        .unwrap();
        let queued_bytes = IntGauge::new(
            "taskwire_queued_bytes",
            "outbound bytes queued for all sockets, not yet taken by the connections",
        )
        .unwrap();
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new("taskwire_commit_seconds", "time of one group commit").buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
            ]),
        )
        .unwrap();
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("taskwire_commit_batch_size", "writes per group commit")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]),
        )
        .unwrap();
        let db_mailbox =
            IntGauge::new("taskwire_db_pending_writes", "writes waiting for the next group commit").unwrap();
        let change_log_len = IntGauge::new("taskwire_change_log_length", "changes kept in the log").unwrap();
        for m in [
            Box::new(sockets_open.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(subscriptions.clone()),
            Box::new(events_published.clone()),
            Box::new(events_delivered.clone()),
            Box::new(sockets_closed_slow.clone()),
            Box::new(sockets_closed_token_queue.clone()),
            Box::new(queued_bytes.clone()),
            Box::new(commit_seconds.clone()),
            Box::new(batch_size.clone()),
            Box::new(db_mailbox.clone()),
            Box::new(change_log_len.clone()),
        ] {
            registry.register(m).expect("metric registered twice");
        }
        for kind in ["tasks", "task", "agents", "agent"] {
            subscriptions.with_label_values(&[kind]).set(0);
        }
        Metrics {
            registry,
            sockets_open,
            subscriptions,
            events_published,
            events_delivered,
            sockets_closed_slow,
            sockets_closed_token_queue,
            queued_bytes,
            commit_seconds,
            batch_size,
            db_mailbox,
            change_log_len,
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding metrics");
        String::from_utf8(buf).expect("metrics are UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
