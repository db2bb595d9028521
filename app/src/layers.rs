//! The layers every request meets, put around each route's handler by `Routes::into_router`.
//!
//! Around each handler, not around the router (`Router::layer`): axum boxes every route's
//! handler, and `Router::layer` wraps that boxed route in a second boxed route, so each request
//! went through axum's route machinery twice (a boxed future, a clone and moves of the request
//! each time: ~900 instructions a request, docs/performance.md). The layers still run after
//! routing, as they must: the request's fields, span name and metric labels need the matched
//! route. Requests no route serves (`404`, `405`) get the layers through the fallbacks.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::handler::HandlerWithoutStateExt;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, Route, on_service};
use http::{HeaderValue, Request};
use tower::layer::layer_fn;
use tower::util::BoxCloneSyncServiceLayer;
use tower::{Service, ServiceBuilder};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::validate_request::ValidateRequestHeaderLayer;

use crate::body::ReadBodyLayer;
use crate::catch_panic::CatchPanic;
use crate::connections::BadHost;
use crate::error::{ApiError, json_error_bodies};
use crate::faults::Faults;
use crate::metrics::HttpMetricLayer;
use crate::request_log::{Fields, REQUEST_ID, RequestLog};
use crate::settings::{CorsSettings, Settings};
use crate::shutdown::Readiness;
use crate::timeout::RequestTimeout;

/// A service the layers can wrap: a route's handler (or a fallback), as axum serves it.
pub trait Endpoint:
    Service<Request<Body>, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> Endpoint for T where
    T: Service<Request<Body>, Response = Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// What every route's handler is served inside: the whole stack, or nothing (`none`, the
/// benchmark's bare baseline).
#[derive(Clone)]
pub struct Layers(Option<Stack>);

#[derive(Clone)]
struct Stack {
    fields: Fields,
    readiness: Readiness,
    /// `None` only for benchmarks that measure the metrics layer's cost.
    metrics: Option<HttpMetricLayer>,
    cors: Option<CorsLayer>,
    timeout: Duration,
    body_limit: usize,
    faults: Faults,
}

impl Layers {
    /// The production stack, from the settings; `faults` is the handle `/faults` changes.
    pub fn new(
        readiness: Readiness,
        settings: &Settings,
        metrics: Option<HttpMetricLayer>,
        faults: Faults,
    ) -> Self {
        Self(Some(Stack {
            fields: Fields::of(settings),
            readiness,
            metrics,
            cors: cors_layer(&settings.cors),
            timeout: settings.server.request_timeout,
            body_limit: settings.server.body_limit_bytes,
            faults,
        }))
    }

    /// No layers at all: what `make bench` compares the stack with.
    pub fn none() -> Self {
        Self(None)
    }

    /// The routes of a plain `Router` under the same layers, for routes that did not come
    /// through `Routes` (tests mount slow or panicking handlers this way). Their requests pay
    /// for axum's route machinery twice.
    pub fn around_router(&self, router: Router) -> Router {
        match self.0.clone() {
            Some(stack) => router.layer(layer_fn(move |route: Route| stack.around(route))),
            None => router,
        }
    }

    /// `router` with `endpoint` serving `filter`'s methods at `path`.
    pub(crate) fn route(
        &self,
        router: Router,
        path: &str,
        filter: MethodFilter,
        endpoint: impl Endpoint,
    ) -> Router {
        match &self.0 {
            Some(stack) => router.route(path, on_service(filter, stack.around(endpoint))),
            None => router.route(path, on_service(filter, endpoint)),
        }
    }

    /// `router` with `endpoint` answering what no route matches.
    pub(crate) fn fallback(&self, router: Router, endpoint: impl Endpoint) -> Router {
        match &self.0 {
            Some(stack) => router.fallback_service(stack.around(endpoint)),
            None => router.fallback_service(endpoint),
        }
    }

    /// `router` answering a method `path` does not serve with `405`, inside the layers (axum
    /// adds the `Allow` header). Without layers, axum's own `405` already does.
    pub(crate) fn method_not_allowed(&self, router: Router, path: &str) -> Router {
        match &self.0 {
            Some(stack) => {
                let endpoint = stack.around(method_not_allowed.into_service());
                // Merged with the path's routes: axum's default fallback gives way to this one.
                router.route(path, MethodRouter::new().fallback_service(endpoint))
            }
            None => router,
        }
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

impl Stack {
    /// `endpoint` inside every layer, listed in the order a request meets them.
    fn around<E: Endpoint>(&self, endpoint: E) -> impl Endpoint + use<E> {
        let Self {
            fields, timeout, ..
        } = *self;
        let readiness = self.readiness.clone();
        // The metrics layer is optional (benchmarks measure its cost), so the services on both
        // sides of it answer plain `Response`s; an optional layer must not change the types.
        let metrics = self.metrics.clone().map(|layer| {
            ServiceBuilder::new()
                .map_response(IntoResponse::into_response)
                .layer(layer)
        });
        ServiceBuilder::new()
            // Every request gets an id first (the client's own if it is usable, else a
            // generated one), echoed on its response; its fields and log line cover all below.
            .layer(layer_fn(move |inner| RequestLog::new(inner, fields)))
            // Outside catch-panic, the timeout and the error bodies: it counts their final status.
            .option_layer(metrics)
            // One map for every response (each layer is another future every request moves).
            .map_response(move |response| {
                close_when_draining(&readiness, json_error_bodies(response))
            })
            .layer(ValidateRequestHeaderLayer::custom(reject_bad_host))
            .layer(layer_fn(CatchPanic::new))
            // Boxed, service and future: axum clones the whole stack for every request and every
            // layer above moves this one's future, so an unboxed CORS layer (280 bytes of
            // settings, a 224-byte future) made both several times larger, even when off.
            .option_layer(self.cors.clone().map(BoxCloneSyncServiceLayer::new))
            .layer(layer_fn(move |inner| RequestTimeout::new(inner, timeout)))
            // Inside the timeout: a body sent too slowly gets 504 like a slow handler.
            .layer(ReadBodyLayer {
                limit: self.body_limit,
            })
            // Innermost: injected latency is cut by the timeout, injected errors are counted.
            .layer(self.faults.layer())
            .service(endpoint)
    }
}

/// The `400` for a request its connection marked for a missing or repeated `Host` header.
#[allow(clippy::result_large_err)] // the signature tower-http's `ValidateRequest` takes
fn reject_bad_host<B>(request: &mut Request<B>) -> Result<(), Response<Body>> {
    match request.extensions().get::<BadHost>() {
        None => Ok(()),
        Some(_) => Err(ApiError::rejected(
            http::StatusCode::BAD_REQUEST,
            "an HTTP/1.1 request needs exactly one Host header",
        )
        .into_response()),
    }
}

/// While draining, every response asks the client to close its keep-alive connection, so
/// clients and proxies reconnect (to a ready instance) before this one closes its listener,
/// instead of racing the close with a request on an idle connection.
fn close_when_draining<B>(
    readiness: &Readiness,
    mut response: http::Response<B>,
) -> http::Response<B> {
    if !readiness.is_ready() {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn cors_layer(cors: &CorsSettings) -> Option<CorsLayer> {
    let origins: Vec<_> = cors.origins().collect();
    if origins.is_empty() {
        return None;
    }
    let allow = if cors.allows_any() {
        AllowOrigin::any()
    } else {
        // Validated with the settings.
        AllowOrigin::list(origins.iter().map(|o| o.parse().expect("valid origin")))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([http::Method::GET, http::Method::HEAD])
            .expose_headers([REQUEST_ID]),
    )
}
