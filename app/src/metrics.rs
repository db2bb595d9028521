//! Metrics: the HTTP layer (axum-prometheus, see `http_layer`), the Prometheus recorder,
//! process and build metrics, and the `/metrics` router served on its own listener.
//!
//! Metric names come from `.cargo/config.toml` (axum-prometheus reads them at compile time).

mod http_layer;

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum_prometheus::AXUM_HTTP_REQUESTS_DURATION_SECONDS;
use axum_prometheus::metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use http::{HeaderValue, header};
use tower::util::MapResponseLayer;

use crate::error::{ApiError, json_error_bodies};
use crate::faults::Faults;
use crate::routes::Endpoint;
use crate::telemetry;
pub use http_layer::HttpMetricLayer;
use http_layer::SeriesTable;

/// Latency buckets in seconds. 0.15 is the SLO threshold the alerts, SLOs and the load-test gate
/// use, so it must stay an exact boundary; 10 covers the default request timeout.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `endpoint` label of every request that matches no route: raw paths would make the label
/// set unbounded (10k random 404s made `/metrics` 17 MB).
pub const UNMATCHED: &str = "unmatched";

/// The route a request is labelled with, in metrics and in its log line: the template it
/// matched, or `UNMATCHED`.
pub fn route_label<B>(request: &http::Request<B>) -> &str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
}

/// Histogram samples wait in a buffer until upkeep folds them into buckets, and the recorder
/// runs no upkeep by itself. Each sample is 16 bytes: at 138k requests/s a 500 ms interval
/// held ~1.1 MB of them and peak RSS was 7.5-8.0 MiB against 6.4-6.6 with 100 ms, at the same
/// throughput (docs/performance.md).
const UPKEEP_INTERVAL: Duration = Duration::from_millis(100);

/// Counted by the log sink (`telemetry`), read at each scrape.
const LOG_LINES_DROPPED: &str = "log_lines_dropped_total";

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The HTTP layer's handles, per process like the recorder that gave them out.
static HTTP_SERIES: LazyLock<SeriesTable> = LazyLock::new(SeriesTable::default);

/// The process-wide Prometheus recorder (a global: installed once, shared by every `Metrics`).
fn recorder() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(AXUM_HTTP_REQUESTS_DURATION_SECONDS.to_string()),
                    &LATENCY_BUCKETS,
                )
                .expect("latency buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).expect("no other metrics recorder is installed");
            handle
        })
        .clone()
}

/// Everything `/metrics` renders, and the faults `/faults` switches (same listener: never public).
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    process: Arc<metrics_process::Collector>,
    faults: Option<Faults>,
}

impl Metrics {
    /// Installs the recorder (once per process), registers process and build metrics and starts
    /// the upkeep task on the current runtime.
    pub fn install() -> Self {
        let handle = recorder();
        let process = metrics_process::Collector::default();
        process.describe();
        metrics::describe_gauge!("build_info", "Always 1; labels identify the running build.");
        metrics::gauge!(
            "build_info",
            "version" => env!("CARGO_PKG_VERSION"),
            "revision" => option_env!("BUILD_REVISION").unwrap_or("unknown"),
        )
        .set(1.0);

        metrics::describe_counter!(
            LOG_LINES_DROPPED,
            "Log lines dropped because stdout could not keep up or failed."
        );
        metrics::counter!(LOG_LINES_DROPPED).absolute(telemetry::dropped_log_lines());

        let upkeep = handle.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                ticks.tick().await;
                upkeep.run_upkeep();
            }
        });
        Self {
            handle,
            process: Arc::new(process),
            faults: None,
        }
    }

    /// Serves `GET`/`PUT`/`DELETE /faults` for these faults beside `/metrics`.
    pub fn with_faults(self, faults: Faults) -> Self {
        Self {
            faults: Some(faults),
            ..self
        }
    }

    /// The HTTP layer: `http_requests_total`, `http_request_duration_seconds` and
    /// `http_requests_pending`, labelled by route template (or `unmatched`). Taking `&self`
    /// ensures the recorder is installed before the layer asks it for handles.
    pub fn http_layer(&self) -> HttpMetricLayer {
        http_layer::layer(&HTTP_SERIES)
    }

    /// Creates the HTTP layer's series of these endpoints now, with their 5xx counters at 0, so
    /// that the first error after a start is counted (see `http_layer::PRECREATED_STATUSES`).
    pub fn create_series(&self, endpoints: &[Endpoint]) {
        for endpoint in endpoints {
            http_layer::create_series(&HTTP_SERIES, &endpoint.method, endpoint.path);
        }
    }

    pub fn render(&self) -> String {
        self.process.collect();
        metrics::counter!(LOG_LINES_DROPPED).absolute(telemetry::dropped_log_lines());
        self.handle.render()
    }

    /// The router of the metrics listener (`/metrics`, and `/faults` when given); its requests
    /// are not counted.
    pub fn router(self) -> Router {
        let faults = self.faults.clone();
        let mut router = Router::new()
            .route("/metrics", get(render))
            .with_state(self);
        if let Some(faults) = faults {
            router = router.merge(faults.router());
        }
        router
            .fallback(|| async { ApiError::NO_ROUTE })
            // A wrong method (`POST /faults`) gets the one error shape too.
            .layer(MapResponseLayer::new(json_error_bodies))
    }
}

async fn render(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        metrics.render(),
    )
}
