use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use backend::settings::Settings;
use backend::startup::Application;
use backend::{healthcheck, shutdown, telemetry};
use clap::{Parser, Subcommand};

/// mimalloc: `alloc.rs` says why, and why not through the `mimalloc` crate.
#[global_allocator]
static ALLOCATOR: backend::alloc::Allocator = backend::alloc::Allocator;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Optional TOML settings file; environment variables override it.
    #[arg(long, env = "APP_CONFIG_FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API and /metrics (the default).
    Serve,
    /// GET the local /api/v1/health and exit 0 on 200, 1 otherwise.
    Healthcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings),
        Command::Healthcheck => healthcheck(settings),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    let telemetry = telemetry::init(&settings)?;
    // Tokio sizes its worker pool with `available_parallelism`, which follows the CPU affinity
    // and cgroup quota: the CPUs the container actually has (TOKIO_WORKER_THREADS overrides).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let served = runtime.block_on(async {
        let shutdown = shutdown::signal();
        let app = Application::build(settings).await?;
        app.run_until(shutdown).await
    });
    telemetry.shutdown();
    served
}

fn healthcheck(settings: Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(healthcheck::check(healthcheck::local_addr(
        &settings.server,
    )))
}
