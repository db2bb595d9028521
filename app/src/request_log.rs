//! A request's identity: its id, its fields and one log line.
//!
//! The id is the client's `x-request-id` when it is usable, else a generated UUID v4; the
//! request's handlers see it in that header, and the response echoes it. The request's fields
//! (method, route, path, request id, and with traces on the trace id) are on every event logged
//! while it is handled. They live in a tracing span when something needs one (traces, which
//! export it as the request's server span; see `telemetry::request_spans`), else in the cheaper
//! `RequestFields` that the JSON lines read. The line is written when the response head is
//! ready, with its status and latency.
//!
//! In place of tower-http's `TraceLayer`, which does the same and also wraps every response
//! body to enter the span at each of its polls (nothing is logged while a body is written), and
//! of its request-id layers, which also store the id in the request's and the response's
//! extensions, allocating a map for each: together ~15% of a request's user-space work
//! (docs/performance.md).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, Request, Response};
use tower::Service;
use tracing::field::Empty;
use tracing::{Level, Span};

use crate::faults::InjectedError;
use crate::metrics::{UNMATCHED, route_label};
use crate::shutdown::Draining;
use crate::telemetry::{self, RequestFields, RequestLine, Text};

/// The log target of the one-line-per-request log, so it can be filtered on its own
/// (`APP__LOG__LEVEL=info,backend::http=warn` keeps only failed requests): the crate's name,
/// then `::http`.
pub const REQUEST_LOG: &str = concat!(env!("CARGO_CRATE_NAME"), "::http");

/// The request id's header: kept or replaced by `request_id`, echoed on the response, logged.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Where a request's fields are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fields {
    /// In `RequestFields`, for the JSON lines alone.
    Lines,
    /// In a tracing span (`telemetry::request_spans`).
    Span,
    /// In a tracing span that is exported, with OpenTelemetry's fields and the caller's trace.
    TracedSpan,
}

impl Fields {
    pub fn of(settings: &crate::settings::Settings) -> Self {
        if settings.tracing.enabled() {
            Self::TracedSpan
        } else if telemetry::request_spans(settings) {
            Self::Span
        } else {
            Self::Lines
        }
    }
}

/// Identifies, describes and logs each request (a layer: `layer_fn(|s| RequestLog::new(s, f))`).
#[derive(Clone)]
pub struct RequestLog<S> {
    inner: S,
    fields: Fields,
}

impl<S> RequestLog<S> {
    pub fn new(inner: S, fields: Fields) -> Self {
        Self { inner, fields }
    }
}

impl<S, B, ResBody> Service<Request<B>> for RequestLog<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Logged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let (id, generated) = request_id(&mut request);
        let start = Instant::now();
        let mut scope = match self.fields {
            Fields::Lines => Scope::Lines(request_fields(&request, &id, generated)),
            fields => {
                let traced = fields == Fields::TracedSpan;
                let span = request_span(&request, &id, traced);
                Scope::Span { span, traced }
            }
        };
        let inner = scope.run(|_| self.inner.call(request));
        Logged {
            inner,
            scope,
            start,
            id: Some(id),
        }
    }
}

/// A request's fields, made current while its service is called and its future polled.
enum Scope {
    Lines(RequestFields),
    /// `traced`: the span is exported.
    Span {
        span: Span,
        traced: bool,
    },
}

impl Scope {
    /// Runs `f` inside the request's scope; `f` is given the span, if the request has one.
    fn run<R>(&mut self, f: impl FnOnce(Option<(&Span, bool)>) -> R) -> R {
        match self {
            Self::Lines(fields) => fields.scope(|| f(None)),
            Self::Span { span, traced } => span.in_scope(|| f(Some((span, *traced)))),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future, polled inside the request's scope; logs the line when ready.
    pub struct Logged<F> {
        #[pin]
        inner: F,
        scope: Scope,
        start: Instant,
        id: Option<HeaderValue>,
    }
}

impl<F, ResBody, E> Future for Logged<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (inner, start) = (this.inner, *this.start);
        let mut result = ready!(this.scope.run(|span| {
            let result = ready!(inner.poll(cx));
            if let Ok(response) = &result {
                log_response(response, start.elapsed(), span);
            }
            Poll::Ready(result)
        }));
        if let (Ok(response), Some(id)) = (&mut result, this.id.take()) {
            response.headers_mut().insert(REQUEST_ID, id);
        }
        Poll::Ready(result)
    }
}

/// The longest `x-request-id` a client may choose: a UUID is 36, a W3C trace id 32.
const REQUEST_ID_MAX_LEN: usize = 128;

/// The request's id: the client's `x-request-id` if it is one value of 1 to `REQUEST_ID_MAX_LEN`
/// visible ASCII characters (`!` to `~`), else a generated UUID v4, which replaces it in the
/// request. The id is echoed on the response and written in the log line: a 15 kB one, an empty
/// one, or one with non-ASCII bytes (logged as `""`) or control characters correlates nothing.
/// `true` with a generated id.
fn request_id<B>(request: &mut Request<B>) -> (HeaderValue, bool) {
    let mut ids = request.headers().get_all(&REQUEST_ID).iter();
    if let (Some(id), None) = (ids.next(), ids.next()) {
        let bytes = id.as_bytes();
        if (1..=REQUEST_ID_MAX_LEN).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic)
        {
            return (id.clone(), false);
        }
    }
    let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    // One allocation, shared by the request's copy and the response's: a `Bytes` made from a
    // `Vec` (what `from_str` makes) allocates again when it is first cloned.
    let id = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .expect("a UUID is a valid header value");
    // `insert` replaces every value the client sent.
    request.headers_mut().insert(REQUEST_ID, id.clone());
    (id, true)
}

/// The fields a request's span would hold, in the same order, for the JSON lines alone.
fn request_fields<B>(request: &Request<B>, id: &HeaderValue, generated: bool) -> RequestFields {
    // Visible ASCII, as `request_id` made sure. A client's may hold a quote or a backslash,
    // escaped in the line; a generated one (a UUID) holds neither.
    let id = id.to_str().unwrap_or_default();
    let id = if generated {
        Text::Token(id)
    } else {
        Text::Str(id)
    };
    RequestFields::of(&[
        ("method", Text::Token(request.method().as_str())),
        ("route", Text::Str(route_label(request))),
        ("path", Text::Str(request.uri().path())),
        ("request_id", id),
    ])
}

/// The span of one request, which its log line reports. With traces on, it also continues the
/// caller's W3C trace (`traceparent`) and names itself after the route, as OpenTelemetry's
/// HTTP conventions ask. With traces off those fields stay empty, and log lines skip them.
fn request_span<B>(request: &Request<B>, id: &HeaderValue, traces: bool) -> Span {
    let (method, route) = (request.method(), route_label(request));
    // Visible ASCII, as `request_id` made sure.
    let request_id = id.to_str().unwrap_or_default();
    let name = traces.then(|| span_name(method, route));
    // Given at creation (a `None` stays empty): each later `record` is another pass through
    // every layer.
    let span = tracing::info_span!(
        target: REQUEST_LOG,
        "request",
        method = method.as_str(),
        route,
        path = request.uri().path(),
        request_id,
        fault = Empty,
        fault_delay_ms = Empty,
        trace_id = Empty,
        otel.name = name.as_deref(),
        otel.kind = traces.then_some("server"),
    );
    if traces {
        telemetry::continue_trace(&span, request.headers());
    }
    span
}

/// OpenTelemetry's HTTP server span name: `GET /api/v1/info`, or the method alone for a path no
/// route matched (a raw path would make names unbounded). Joined here and given as a `&str`: a
/// `Display` value was formatted by every layer that records it (~400 instructions a request).
fn span_name(method: &http::Method, route: &str) -> String {
    let method = method.as_str();
    if route == UNMATCHED {
        return method.to_owned();
    }
    [method, route].join(" ")
}

/// Logs the request's line if the filter lets it through: straight to the JSON lines, with the
/// fields of the request's `RequestFields` or of its `span`, else (the text format) as a
/// tracing event. An exported span (`traced`) gets the response's status.
fn log_response<B>(response: &Response<B>, latency: Duration, span: Option<(&Span, bool)>) {
    let status = response.status().as_u16();
    let (level, message) = if response.extensions().get::<InjectedError>().is_some() {
        // Counted as an error by the metrics, as intended; the log says it was not a real one.
        (Level::WARN, "request failed: injected fault")
    } else if response.extensions().get::<Draining>().is_some() {
        // `/ready` answering 503 while the instance drains: intended, not a failure.
        (Level::INFO, "request completed: draining")
    } else if response.status().is_server_error() {
        (Level::ERROR, "request failed")
    } else {
        (Level::INFO, "request completed")
    };
    if let Some((span, true)) = span {
        // Whatever the log filter lets through: the span's status is not a log line.
        let error = (level == Level::ERROR).then_some(message);
        telemetry::end_trace(span, status, error);
    }
    // The filter of `log.level`, as an event at this target and level would meet it.
    let enabled = match level {
        Level::ERROR => tracing::enabled!(target: REQUEST_LOG, Level::ERROR),
        Level::WARN => tracing::enabled!(target: REQUEST_LOG, Level::WARN),
        _ => tracing::enabled!(target: REQUEST_LOG, Level::INFO),
    };
    if !enabled {
        return;
    }
    let line = RequestLine {
        level,
        message,
        target: REQUEST_LOG,
        status,
        latency,
    };
    let written = match span {
        None => telemetry::request_line(&line),
        Some((span, _)) => telemetry::request_line_in(span, &line),
    };
    if written {
        return;
    }
    let latency_ms = telemetry::latency_ms(latency);
    // Signed: OpenTelemetry's attributes have no unsigned integer, and tracing-opentelemetry
    // exports a `u64` field as the text "200" (formatted through `Debug`).
    let status = i64::from(status);
    match level {
        Level::ERROR => {
            tracing::event!(target: REQUEST_LOG, Level::ERROR, message, status, latency_ms)
        }
        Level::WARN => {
            tracing::event!(target: REQUEST_LOG, Level::WARN, message, status, latency_ms)
        }
        _ => tracing::event!(target: REQUEST_LOG, Level::INFO, message, status, latency_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn fields_with(env: &[(&str, &str)]) -> Fields {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Fields::of(&Settings::load_from(None, env.collect()).unwrap())
    }

    #[test]
    fn a_request_gets_a_span_only_when_something_reads_it() {
        assert_eq!(fields_with(&[]), Fields::Lines);
        assert_eq!(fields_with(&[("APP__LOG__FORMAT", "text")]), Fields::Span);
        let level = concat!(
            "info,",
            env!("CARGO_CRATE_NAME"),
            "[request{route=/x}]=debug"
        );
        assert_eq!(fields_with(&[("APP__LOG__LEVEL", level)]), Fields::Span);
        let traces = ("APP__TRACING__OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(fields_with(&[traces]), Fields::TracedSpan);
    }

    #[test]
    fn spans_are_named_after_the_route_template_or_the_method_alone() {
        let get = span_name(&http::Method::GET, "/api/v1/info");
        assert_eq!(get, "GET /api/v1/info");
        // A raw path would make span names unbounded.
        assert_eq!(span_name(&http::Method::POST, UNMATCHED), "POST");
    }
}
