//! Start-up: bind the listeners, assemble the router and its layers, serve until shutdown.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::response::IntoResponse;
use http::{HeaderValue, Request, Response};
use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower::layer::layer_fn;
use tower::util::BoxCloneSyncServiceLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::validate_request::ValidateRequestHeaderLayer;

use crate::body::ReadBodyLayer;
use crate::catch_panic::CatchPanic;
use crate::connections::{self, BadHost, Serve};
use crate::error::{ApiError, json_error_bodies};
use crate::faults::Faults;
use crate::metrics::{HttpMetricLayer, Metrics};
use crate::request_log::{Fields, REQUEST_ID, RequestLog};
use crate::routes::{self, AppState};
use crate::settings::{CorsSettings, Settings};
use crate::shutdown::Readiness;
use crate::timeout::RequestTimeout;

/// The whole API: routes plus layers, listed in the order a request meets them.
/// `metrics` is `None` only for benchmarks that measure the metrics layer's cost. The faults
/// are `settings.faults`, fixed; `app_with_faults` takes a handle that can change them.
pub fn app(
    routes: Router,
    readiness: Readiness,
    settings: &Settings,
    metrics: Option<HttpMetricLayer>,
) -> Router {
    app_with_faults(
        routes,
        readiness,
        settings,
        metrics,
        Faults::new(&settings.faults),
    )
}

/// `app`, with the faults the caller also serves at `/faults` (what `Application` runs).
pub fn app_with_faults(
    routes: Router,
    readiness: Readiness,
    settings: &Settings,
    metrics: Option<HttpMetricLayer>,
    faults: Faults,
) -> Router {
    let server = &settings.server;
    let (fields, timeout) = (Fields::of(settings), server.request_timeout);
    // The metrics layer is optional (benchmarks measure its cost), so the services on both
    // sides of it answer plain `Response`s; an optional layer must not change the types.
    let metrics = metrics.map(|layer| {
        ServiceBuilder::new()
            .map_response(IntoResponse::into_response)
            .layer(layer)
    });
    // One `Router::layer` call: each call adds a boxed service that every request clones.
    routes.layer(
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
            .option_layer(cors_layer(&settings.cors).map(BoxCloneSyncServiceLayer::new))
            .layer(layer_fn(move |inner| RequestTimeout::new(inner, timeout)))
            // Inside the timeout: a body sent too slowly gets 504 like a slow handler.
            .layer(ReadBodyLayer {
                limit: server.body_limit_bytes,
            })
            // Innermost: injected latency is cut by the timeout, injected errors are counted.
            .layer(faults.layer()),
    )
}

/// The `400` for a request its connection marked for a missing or repeated `Host` header.
#[allow(clippy::result_large_err)] // the signature tower-http's `ValidateRequest` takes
fn reject_bad_host<B>(request: &mut Request<B>) -> Result<(), Response<axum::body::Body>> {
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
fn close_when_draining<B>(readiness: &Readiness, mut response: Response<B>) -> Response<B> {
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

/// A bound, ready-to-run server: both listeners are open when `build` returns.
pub struct Application {
    api: TcpListener,
    metrics: TcpListener,
    router: Router,
    metrics_router: Router,
    readiness: Readiness,
    settings: Settings,
}

impl Application {
    /// Binds the listeners and builds everything; must run inside a tokio runtime.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::with_routes(settings, Router::new()).await
    }

    /// Like `build`, with `extra` routes merged into the API under the same layers (tests use
    /// it to mount slow or panicking handlers).
    pub async fn with_routes(settings: Settings, extra: Router) -> anyhow::Result<Self> {
        let metrics = Metrics::install();
        // After the recorder: `new` describes the faults' counter to it.
        let faults = Faults::new(&settings.faults);
        let metrics = metrics.with_faults(faults.clone());
        let state = AppState::new(&settings)?;
        let api = routes::router(state.clone());
        metrics.create_series(api.endpoints());
        let router = app_with_faults(
            api.into_router().merge(extra),
            state.readiness.clone(),
            &settings,
            Some(metrics.http_layer()),
            faults,
        );
        Self::bind(settings, router, state.readiness, metrics).await
    }

    /// Serves `router` as it is (no layers added) with the same listeners, shutdown and
    /// `/metrics`; `build` uses it, and so does the benchmark's layer-less baseline.
    pub async fn bind(
        settings: Settings,
        router: Router,
        readiness: Readiness,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let api_addr = SocketAddr::new(settings.server.host, settings.server.port);
        let metrics_addr = SocketAddr::new(settings.metrics.host, settings.metrics.port);
        let api = TcpListener::bind(api_addr)
            .await
            .with_context(|| format!("cannot bind the API listener on {api_addr}"))?;
        let metrics_listener = TcpListener::bind(metrics_addr)
            .await
            .with_context(|| format!("cannot bind the metrics listener on {metrics_addr}"))?;
        Ok(Self {
            api,
            metrics: metrics_listener,
            router,
            metrics_router: metrics.router(),
            readiness,
            settings,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Serves until `shutdown` resolves, then: readiness 503 at once, keep serving for the drain
    /// delay, stop accepting, finish in-flight requests within the shutdown timeout.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tracing::info!(
            api = %self.api_addr(),
            metrics = %self.metrics_addr(),
            workers = tokio::runtime::Handle::current().metrics().num_workers(),
            "listening"
        );
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.settings.server.header_read_timeout)
            .max_buf_size(self.settings.server.max_header_bytes);

        let (stop_tx, stop_rx) = watch::channel(());
        let limit = self.settings.shutdown.timeout;
        let open_files = connections::open_files_limit();
        let api_cap = connections::api_cap(self.settings.server.max_connections, open_files);
        tracing::info!(
            open_files_limit = open_files,
            max_connections = api_cap,
            metrics_max_connections = connections::METRICS_MAX_CONNECTIONS,
            "open files limit and connection caps"
        );
        if api_cap < self.settings.server.max_connections {
            tracing::warn!(
                "server.max_connections lowered from {} to {api_cap} to fit the open files limit \
                 ({open_files})",
                self.settings.server.max_connections
            );
        }
        let api = Serve {
            name: "api",
            cap: api_cap,
            http: http.clone(),
            limit,
        };
        let api = tokio::spawn(api.run(self.api, self.router, stop_rx.clone()));
        let metrics = Serve {
            name: "metrics",
            cap: connections::METRICS_MAX_CONNECTIONS,
            http,
            limit,
        };
        let metrics = tokio::spawn(metrics.run(self.metrics, self.metrics_router, stop_rx));

        shutdown.await;
        self.readiness.set_draining();
        let drain = self.settings.shutdown.drain_delay;
        tracing::info!(
            drain_delay_ms = drain.as_millis() as u64,
            "draining: readiness is 503"
        );
        tokio::time::sleep(drain).await;
        tracing::info!("closing listeners; finishing in-flight requests");
        drop(stop_tx);

        let (api, metrics) = tokio::join!(api, metrics);
        let clean = api? && metrics?;
        if clean {
            tracing::info!("shutdown complete");
        } else {
            tracing::warn!(timeout_ms = limit.as_millis() as u64, "shutdown timed out");
        }
        Ok(())
    }
}
