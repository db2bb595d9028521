//! Benchmark variants of the server, for `make bench` (see scripts/bench.py):
//! `bench_server bare` serves the routes with no layers at all; `bench_server no-metrics` has
//! every layer but the metrics one. Settings, listeners, logging and shutdown are the real ones.

/// The same allocator as the real binary, so the variants differ only in their layers.
#[global_allocator]
static ALLOCATOR: backend::alloc::Allocator = backend::alloc::Allocator;

use backend::layers::Layers;
use backend::metrics::Metrics;
use backend::routes::{self, AppState};
use backend::settings::Settings;
use backend::startup::{Application, app};
use backend::{shutdown, telemetry};

fn main() -> anyhow::Result<()> {
    let variant = std::env::args().nth(1).unwrap_or_default();
    let settings = Settings::load(None)?;
    let telemetry = telemetry::init(&settings)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let served = runtime.block_on(async {
        let shutdown = shutdown::signal();
        let metrics = Metrics::install();
        let state = AppState::new(&settings)?;
        let routes = routes::router(state.clone());
        let router = match variant.as_str() {
            "bare" => routes.into_router(&Layers::none()),
            "no-metrics" => app(routes, state.readiness.clone(), &settings, None),
            other => anyhow::bail!("unknown variant {other:?}: use bare or no-metrics"),
        };
        let server = Application::bind(settings, router, state.readiness, metrics).await?;
        server.run_until(shutdown).await
    });
    telemetry.shutdown();
    served
}
