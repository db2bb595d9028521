//! Start-up: bind the listeners, assemble the routes inside their layers, serve until shutdown.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::connections::{self, Serve};
use crate::faults::Faults;
use crate::layers::Layers;
use crate::metrics::{HttpMetricLayer, Metrics};
use crate::routes::{self, AppState, Routes};
use crate::settings::Settings;
use crate::shutdown::Readiness;

/// The whole API: `routes`, each inside every layer (`layers`). `metrics` is `None` only for
/// benchmarks that measure the metrics layer's cost. The faults are `settings.faults`, fixed.
pub fn app(
    routes: Routes,
    readiness: Readiness,
    settings: &Settings,
    metrics: Option<HttpMetricLayer>,
) -> Router {
    let faults = Faults::new(&settings.faults);
    routes.into_router(&Layers::new(readiness, settings, metrics, faults))
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
        let layers = Layers::new(
            state.readiness.clone(),
            &settings,
            Some(metrics.http_layer()),
            faults,
        );
        let router = api.into_router(&layers).merge(layers.around_router(extra));
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
