//! Logging and traces.
//!
//! Logs: one JSON object per line on stdout (`json`) or a human format, filtered by `log.level`,
//! written in batches by a thread of their own (`sink`).
//! Traces (opt-in): when `tracing.otlp_endpoint` is set, every span that passes the same filter
//! is also exported over OTLP/HTTP, and requests join the trace of an incoming `traceparent`.
//! When it is not set, no OpenTelemetry code runs at all: the layer is `None`.

mod json;
mod sink;

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Status, TraceContextExt, TracerProvider as _};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::settings::{LogFormat, Settings, TracingSettings};
use json::{JsonLines, record_on_lines};
pub use json::{
    RequestFields, RequestLine, Text, latency_ms, record, request_line, request_line_in,
};
use sink::LogSink;

/// One export must not outlive the shutdown budget by much: a collector that is down delays
/// exit by at most this (the batch processor drops spans rather than queueing without bound).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// The process's log sink, once `init` has run (`/metrics` reads its dropped lines).
static SINK: OnceLock<LogSink> = OnceLock::new();

/// The sink the JSON layer writes to, once `init` has installed that layer.
fn json_sink() -> Option<&'static LogSink> {
    JSON.get().and(SINK.get())
}

/// Set by `init` when the log format is JSON.
static JSON: OnceLock<()> = OnceLock::new();

/// Log lines dropped since start because stdout could not keep up or failed (`sink`).
pub fn dropped_log_lines() -> u64 {
    SINK.get().map_or(0, LogSink::dropped)
}

/// What `init` set up and `shutdown` must flush.
#[must_use = "call shutdown() before exit, or buffered spans and log lines are lost"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
    sink: LogSink,
}

impl Telemetry {
    /// Exports the spans still buffered, then writes the log lines still buffered. Call it
    /// after the runtime has stopped serving; later lines are written directly.
    pub fn shutdown(mut self) {
        if let Some(provider) = self.traces.take()
            && let Err(error) = provider.shutdown_with_timeout(EXPORT_TIMEOUT)
        {
            tracing::warn!(%error, "could not flush the last spans");
        }
    }
}

/// The buffered log lines are written however the process ends its `main`: `shutdown`, an
/// early return on an error, or a panic that unwinds.
impl Drop for Telemetry {
    fn drop(&mut self) {
        self.sink.close();
    }
}

/// `tracing_subscriber::fmt`'s writer for the text format: it hands over each event whole.
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = &'a LogSink;
    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl std::io::Write for &LogSink {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.write_line(line);
        Ok(line.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the global subscriber. `log.level` and `tracing.*` were validated with the settings.
pub fn init(settings: &Settings) -> anyhow::Result<Telemetry> {
    let (targets, spans) = filter(&settings.log.level)?;
    let traces = settings
        .tracing
        .enabled()
        .then(|| tracer_provider(&settings.tracing))
        .transpose()?;
    let otel = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
            // Thread ids and busy/idle timings mean little for tasks that hop between workers.
            .with_threads(false)
            .with_tracked_inactivity(false)
            // Every request span is made at one line of one module: its source location and
            // target would be the same six attributes on every span and event, ~10,000
            // instructions a request to build, export and encode (docs/performance.md).
            .with_location(false)
            .with_target(false)
    });
    let sink = LogSink::stdout().context("cannot start the log writer thread")?;
    let registry = tracing_subscriber::registry()
        .with(targets)
        .with(spans)
        .with(otel);
    match settings.log.format {
        LogFormat::Json => {
            registry.with(JsonLines::new(sink.clone())).try_init()?;
            let _ = JSON.set(());
        }
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(sink.clone()))
            .try_init()?,
    }
    let _ = SINK.set(sink.clone());
    Ok(Telemetry { traces, sink })
}

/// The filter of `log.level`. `EnvFilter` looks each span up in a locked table on every enter
/// and exit of every span (a request's span is entered at each poll), which only directives on
/// span fields (`target[span{field=value}]=level`) need; any other filter is a `Targets`, which
/// decides once per call site and takes the same `target=level` directives.
fn filter(level: &str) -> anyhow::Result<(Option<Targets>, Option<EnvFilter>)> {
    if filters_span_fields(level) {
        return Ok((None, Some(EnvFilter::try_new(level)?)));
    }
    let directives: Vec<&str> = level.split(',').filter(|d| !d.is_empty()).collect();
    Ok((Some(directives.join(",").parse()?), None))
}

/// Whether each request needs a tracing span: to be exported (traces on), to be matched by a
/// filter on span fields (`[request{route=…}]`), or to prefix the text format's lines. Else the
/// JSON lines take the request's fields from its `RequestFields`, at a fraction of the cost.
pub fn request_spans(settings: &Settings) -> bool {
    settings.tracing.enabled()
        || filters_span_fields(&settings.log.level)
        || settings.log.format == LogFormat::Text
}

/// Whether `log.level` has a directive on span fields (`target[span{field=value}]=level`).
fn filters_span_fields(level: &str) -> bool {
    level.contains('[')
}

fn tracer_provider(settings: &TracingSettings) -> anyhow::Result<SdkTracerProvider> {
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(settings.traces_url())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("cannot build the OTLP span exporter (tracing.otlp_endpoint)")?;
    // OTEL_RESOURCE_ATTRIBUTES and OTEL_BSP_* (batch size, delay, queue) still apply.
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// Joins a request's span to the W3C trace context of its headers and records the trace id,
/// so the request's log line carries it. Only used when traces are on.
pub fn continue_trace(span: &Span, headers: &http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Fails only when the span is disabled by the filter; then there is nothing to join.
    let _ = span.set_parent(parent);
    let trace_id = span.context().span().span_context().trace_id();
    // The W3C form, 32 lowercase hex digits, is a UUID's `simple` form of the same 16 bytes:
    // uuid's encoder, and a `&str` field, skip formatting a `u128` through `Display` in every
    // layer that records it (~1,400 instructions a request).
    let mut hex = [0; uuid::fmt::Simple::LENGTH];
    let hex = uuid::Uuid::from_bytes(trace_id.to_bytes())
        .simple()
        .encode_lower(&mut hex);
    if !record_on_lines(span, "trace_id", hex) {
        span.record("trace_id", &*hex);
    }
}

/// Gives a request's exported span its response: the status code as OpenTelemetry's HTTP
/// conventions name it (`http.response.status_code`, an integer), and for a failure (`error`:
/// the message its log line has at `ERROR`) the span status `Error`. Set on the span itself,
/// not carried by an event: the request's line is not a span event (`json::request_line_in`).
/// Only used when traces are on.
pub fn end_trace(span: &Span, status: u16, error: Option<&'static str>) {
    span.set_attribute("http.response.status_code", i64::from(status));
    if let Some(message) = error {
        span.set_status(Status::error(message));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::{Event, Subscriber};
    use tracing_subscriber::layer::{Context, Layer};

    use super::*;

    /// The (target, level) of every event that reaches it.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let meta = event.metadata();
            let seen = format!("{} {}", meta.target(), meta.level());
            self.0.lock().unwrap().push(seen);
        }
    }

    fn seen(targets: Option<Targets>, spans: Option<EnvFilter>) -> Vec<String> {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(targets)
            .with(spans)
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "backend::http", "");
            tracing::info!(target: "backend::http", "");
            tracing::warn!(target: "backend::http", "");
            tracing::info!(target: "backend::startup", "");
            tracing::debug!(target: "backend::startup", "");
            tracing::info!(target: "hyper::proto", "");
            tracing::warn!(target: "hyper::proto", "");
            tracing::error!(target: "other", "");
        });
        seen.0.lock().unwrap().clone()
    }

    #[test]
    fn a_filter_without_span_directives_passes_what_env_filter_passes() {
        for level in [
            "info",
            "WARN",
            "off",
            "trace",
            "info,",
            "info,backend::http=warn",
            "warn,backend::startup=info",
            "debug,hyper=warn",
            "error,backend::startup=debug,backend::http=off",
        ] {
            let (targets, spans) = filter(level).unwrap();
            assert!(targets.is_some() && spans.is_none(), "{level}");
            let env = EnvFilter::try_new(level).unwrap();
            assert_eq!(seen(targets, None), seen(None, Some(env)), "{level}");
        }
    }

    #[test]
    fn a_span_directive_keeps_env_filter() {
        let (targets, spans) = filter("info,backend[request{route=/x}]=debug").unwrap();
        assert!(targets.is_none() && spans.is_some());
    }
}
