//! OpenTelemetry traces over OTLP/HTTP (protobuf), only when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set: the standard `OTEL_*` variables configure the exporter and the batch span
//! processor. A trace crosses processes as a W3C `traceparent` string: the API takes the
//! caller's, a job carries the trigger's, and the worker's run span continues it.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The exporter of this process, if any; [`Tracing::shutdown`] flushes it.
#[must_use = "call shutdown at exit to flush the last spans"]
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Exports the spans still queued and stops the exporter (a no-op without one).
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            // The batch processor's thread does the last export; wait for it off the runtime.
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

/// The OpenTelemetry layer when an OTLP endpoint is configured, else none (and no cost).
pub(super) fn layer<S>(role: &str) -> (Option<Box<dyn Layer<S> + Send + Sync>>, Tracing)
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let configured = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if !configured("OTEL_EXPORTER_OTLP_ENDPOINT")
        && !configured("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    {
        return (None, Tracing { provider: None });
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("warning: OpenTelemetry traces are off: {e}");
            return (None, Tracing { provider: None });
        }
    };
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| format!("agentq-{role}"));
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service)
                .with_attribute(KeyValue::new("agentq.role", role.to_owned()))
                .build(),
        )
        .build();
    let tracer = provider.tracer("agentq");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(LevelFilter::INFO)
        .boxed();
    (
        Some(layer),
        Tracing {
            provider: Some(provider),
        },
    )
}

/// The W3C `traceparent` of the current span, or `None` when traces are off (no exporter,
/// or the span is not sampled).
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` the child of the span a `traceparent` names. A missing or malformed one, or
/// traces being off, leaves the span where it is.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier =
        std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}
