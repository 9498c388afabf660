//! Logs and metrics. Logs are JSON lines through tracing (or human-readable when asked);
//! metrics go to one process-wide Prometheus recorder rendered at `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

mod json_log;
mod traces;

pub use traces::{current_traceparent, set_parent_from_traceparent, Tracing};

/// Installs the global tracing subscriber. `json` picks JSON lines with flat, stably typed
/// fields (see [`json_log`]); `RUST_LOG` filters the lines
/// (default `info`). When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also exported over
/// OTLP/HTTP as `OTEL_SERVICE_NAME` (default `agentq-<role>`); otherwise no layer is added.
/// Later calls are no-ops, so tests may call it freely. Keep the answer and call
/// [`Tracing::shutdown`] at exit to flush the last spans.
pub fn init_tracing(json: bool, role: &str) -> Tracing {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (otel, tracing) = traces::layer(role);
    let fmt_layer = if json {
        fmt::layer()
            .with_writer(std::io::stderr)
            .fmt_fields(JsonFields::new())
            .event_format(json_log::FlatJson)
            .boxed()
    } else {
        fmt::layer().with_writer(std::io::stderr).boxed()
    };
    // `RUST_LOG` filters the log lines only: the spans of a trace are recorded at `info`
    // whatever the log level.
    let _ = tracing_subscriber::registry()
        .with(otel)
        .with(fmt_layer.with_filter(filter))
        .try_init();
    tracing
}

/// Bucket bounds of the `_seconds` histograms: 5 ms to an hour (HTTP latency, queue wait,
/// run duration and approval decisions share them).
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Bucket bounds of the count histograms (attempts, batch sizes).
const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 64.0, 128.0, 256.0, 512.0,
];

/// The process's Prometheus recorder, installed on first use, with every metric's help text.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| b.set_buckets(COUNT_BUCKETS))
                .expect("the bucket lists are constant and not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Only fails when another recorder is installed, which agentq never does.
            if metrics::set_global_recorder(recorder).is_ok() {
                crate::metrics::describe();
                process_collector().describe();
            }
            handle
        })
        .clone()
}

fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// The text exposition of every metric of this process: the pools and `process_*` metrics
/// are read now, the rest is what the roles recorded.
pub fn render_metrics() -> String {
    let handle = metrics_handle();
    crate::metrics::record_pools();
    process_collector().collect();
    handle.render()
}
