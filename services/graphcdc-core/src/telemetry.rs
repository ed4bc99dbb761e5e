//! Logs and traces: the `tracing` subscriber of every binary, W3C trace context in Kafka
//! headers, and OTLP export.
//!
//! - Logs go to stderr, as text or (`GRAPHCDC_LOG_FORMAT=json`) one JSON object a line;
//!   the level comes from `RUST_LOG`.
//! - Traces are exported over OTLP/HTTP only when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (the other standard `OTEL_*` variables
//!   apply: headers, timeout, `OTEL_SERVICE_NAME`, …). Without them no trace layer is
//!   installed and trace context is passed through unchanged.
//! - The processor continues the producer's trace: a `process_batch` span whose parent is
//!   the first event's `traceparent` and which links every event's span, with child spans
//!   for the sink calls. Records it produces (DLQ, repair and relay events) carry the
//!   current span's `traceparent`.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Links kept per batch span: above the largest batch we expect.
const MAX_LINKS: u32 = 10_000;

/// Header (and event field) carrying the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Keeps the trace exporter alive; flushes and stops it when dropped.
pub struct TelemetryGuard(Option<SdkTracerProvider>);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("warning: trace export did not shut down cleanly: {e}");
            }
        }
    }
}

/// Whether the standard OTLP endpoint variables ask for trace export.
pub fn otlp_enabled() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// Install the global subscriber: `default_filter` unless `RUST_LOG` is set, JSON lines
/// when `json`, and the OTLP trace layer when [`otlp_enabled`]. Call it outside the async
/// runtime and keep the guard until the end of `main`.
///
/// # Errors
/// When the OTLP exporter cannot be built or a subscriber is already installed.
pub fn init(default_filter: &str, json: bool) -> crate::error::Result<TelemetryGuard> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if json {
        logs.json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed()
    } else {
        logs.with_filter(filter).boxed()
    };
    let provider = if otlp_enabled() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()?;
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("graphcdc");
        }
        Some(
            SdkTracerProvider::builder()
                .with_resource(resource.build())
                // One link per distinct producer span of a batch (the default keeps 128).
                .with_max_links_per_span(MAX_LINKS)
                .with_batch_exporter(exporter)
                .build(),
        )
    } else {
        None
    };
    // The log level does not decide what is traced: graphcdc's own spans always are (and
    // never the exporter's HTTP client, which would trace its own exports).
    let traces = provider.as_ref().map(|p| {
        let ours = Targets::new()
            .with_target("graphcdc", Level::INFO)
            .with_target("graphcdc_core", Level::INFO);
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("graphcdc"))
            .with_filter(ours)
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()?;
    Ok(TelemetryGuard(provider))
}

/// A Kafka record's headers, as consumed.
pub type RecordHeaders = [(String, Option<Vec<u8>>)];

/// Kafka record headers as a trace-context carrier.
struct HeaderCarrier<'a>(&'a RecordHeaders);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .and_then(|(_, v)| std::str::from_utf8(v.as_deref()?).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// A single `traceparent` value as a carrier.
struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        key.eq_ignore_ascii_case(TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// Collects what the propagator injects.
#[derive(Default)]
struct Collected(Vec<(String, String)>);

impl Injector for Collected {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.push((key.to_owned(), value));
        }
    }
}

/// The trace context a record carries: its `traceparent` header, else `fallback` (the
/// event's own field).
fn record_context(headers: &RecordHeaders, fallback: Option<&str>) -> Option<Context> {
    let propagator = TraceContextPropagator::new();
    let from_headers = propagator.extract(&HeaderCarrier(headers));
    let context = match fallback {
        Some(tp) if !from_headers.span().span_context().is_valid() => {
            propagator.extract(&Traceparent(tp))
        }
        _ => from_headers,
    };
    context.span().span_context().is_valid().then_some(context)
}

/// The span of one batch: child of the first record's trace, linked to every record's
/// producer span. `records` are the batch's records' headers; `traceparents` are the
/// events' own fields, by record index, for records without the header.
pub fn batch_span<'a>(
    records: impl ExactSizeIterator<Item = &'a RecordHeaders>,
    traceparents: &[Option<String>],
) -> tracing::Span {
    let span = tracing::info_span!(
        "process_batch",
        otel.kind = "consumer",
        batch.size = records.len()
    );
    let mut parent = None;
    let mut linked = std::collections::HashSet::new();
    for (i, headers) in records.enumerate() {
        let fallback = traceparents.get(i).and_then(Option::as_deref);
        if let Some(context) = record_context(headers, fallback) {
            let producer = context.span().span_context().clone();
            if linked.insert((producer.trace_id(), producer.span_id())) {
                span.add_link(producer);
            }
            parent.get_or_insert(context);
        }
    }
    if let Some(context) = parent {
        // Fails only without a trace layer (export off): nothing to continue then.
        let _ = span.set_parent(context);
    }
    span
}

/// `traceparent` of the current span, when a trace is being recorded.
pub fn current_traceparent() -> Option<String> {
    let mut carrier = Collected::default();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier
        .0
        .into_iter()
        .find(|(k, _)| k == TRACEPARENT)
        .map(|(_, v)| v)
}

#[cfg(all(test, feature = "embedded"))]
mod tests;
