//! One span and one log line per request.
//!
//! The span carries the request's fields (method, route, path, request id, and with traces on
//! the trace id); every event logged while the request is handled reports them, and with
//! traces on it is exported as the request's server span. The line is written when the
//! response head is ready, with its status and latency.
//!
//! In place of tower-http's `TraceLayer`, which does the same and also wraps every response
//! body to enter the span at each of its polls: nothing is logged while a body is written, and
//! the wrapper and those enters were ~10% of a request's user-space work (docs/performance.md).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{HeaderName, Request, Response};
use tower::{Layer, Service};
use tracing::field::{Empty, display};
use tracing::{Level, Span};

use crate::faults::InjectedError;
use crate::metrics::{UNMATCHED, route_label};
use crate::shutdown::Draining;
use crate::telemetry;

/// The log target of the one-line-per-request log, so it can be filtered on its own
/// (`APP__LOG__LEVEL=info,backend::http=warn` keeps only failed requests): the crate's name,
/// then `::http`.
pub const REQUEST_LOG: &str = concat!(env!("CARGO_CRATE_NAME"), "::http");

/// The request id's header: set or kept by `startup`'s layers, echoed on the response, logged.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Spans and logs each request; outside the request id (it logs the id in force).
#[derive(Clone, Copy)]
pub struct RequestLogLayer {
    traces: bool,
}

impl RequestLogLayer {
    /// `traces`: whether spans are exported (`tracing.otlp_endpoint`), and so need the
    /// OpenTelemetry fields and the caller's trace context.
    pub fn new(traces: bool) -> Self {
        Self { traces }
    }
}

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLog {
            inner,
            traces: self.traces,
        }
    }
}

#[derive(Clone)]
pub struct RequestLog<S> {
    inner: S,
    traces: bool,
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

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let span = request_span(&request, self.traces);
        let start = Instant::now();
        let inner = span.in_scope(|| self.inner.call(request));
        Logged { inner, span, start }
    }
}

pin_project_lite::pin_project! {
    /// The response future, polled inside the request's span; logs the line when ready.
    pub struct Logged<F> {
        #[pin]
        inner: F,
        span: Span,
        start: Instant,
    }
}

impl<F, ResBody, E> Future for Logged<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            log_response(response, this.start.elapsed().as_secs_f64() * 1000.0);
        }
        Poll::Ready(result)
    }
}

/// The span of one request, which its log line reports. With traces on, it also continues the
/// caller's W3C trace (`traceparent`) and names itself after the route, as OpenTelemetry's
/// HTTP conventions ask. With traces off those fields stay empty, and log lines skip them.
fn request_span<B>(request: &Request<B>, traces: bool) -> Span {
    let route = route_label(request);
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        target: REQUEST_LOG,
        "request",
        method = request.method().as_str(),
        route,
        path = request.uri().path(),
        request_id,
        fault = Empty,
        fault_delay_ms = Empty,
        trace_id = Empty,
        otel.name = Empty,
        otel.kind = Empty,
    );
    if traces {
        let method = request.method();
        if route == UNMATCHED {
            span.record("otel.name", display(method));
        } else {
            span.record("otel.name", display(format_args!("{method} {route}")));
        }
        span.record("otel.kind", "server");
        telemetry::continue_trace(&span, request.headers());
    }
    span
}

fn log_response<B>(response: &Response<B>, latency_ms: f64) {
    let status = response.status().as_u16();
    if response.extensions().get::<InjectedError>().is_some() {
        // Counted as an error by the metrics, as intended; the log says it was not a real one.
        tracing::event!(target: REQUEST_LOG, Level::WARN, status, latency_ms, "request failed: injected fault");
    } else if response.extensions().get::<Draining>().is_some() {
        // `/ready` answering 503 while the instance drains: intended, not a failure.
        tracing::event!(target: REQUEST_LOG, Level::INFO, status, latency_ms, "request completed: draining");
    } else if response.status().is_server_error() {
        tracing::event!(target: REQUEST_LOG, Level::ERROR, status, latency_ms, "request failed");
    } else {
        tracing::event!(target: REQUEST_LOG, Level::INFO, status, latency_ms, "request completed");
    }
}
