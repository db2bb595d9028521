//! Test helpers: the real server in-process (`spawn_app`) or as the real binary (`spawn_process`).
//!
//! Run the tests with `cargo nextest run` (`make test-rust`): it gives every test its own process,
//! which exact metric counts rely on, since the metrics recorder is process-wide.
#![allow(dead_code)] // each test crate uses its own subset

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use backend::settings::Settings;
use backend::shutdown::Readiness;
use backend::startup::Application;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Settings for tests: loopback, random ports, no drain delay.
pub fn test_settings() -> Settings {
    let mut settings = Settings::default();
    settings.server.host = [127, 0, 0, 1].into();
    settings.server.port = 0;
    settings.metrics.host = [127, 0, 0, 1].into();
    settings.metrics.port = 0;
    settings.shutdown.drain_delay = Duration::ZERO;
    settings
}

pub struct TestApp {
    pub api: SocketAddr,
    pub metrics: SocketAddr,
    pub readiness: Readiness,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    pub server: JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// A URL on the metrics listener (`/metrics`, `/faults`).
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.metrics, path)
    }

    /// `PUT /faults` on the metrics listener with `body`; returns the status and the JSON answer.
    pub async fn put_faults(&self, body: &str) -> (u16, serde_json::Value) {
        let response = self
            .client
            .put(self.admin_url("/faults"))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("PUT /faults");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    pub async fn scrape(&self) -> String {
        let response = self
            .client
            .get(self.metrics_url())
            .send()
            .await
            .expect("scrape");
        assert_eq!(response.status(), 200);
        response.text().await.expect("metrics text")
    }

    /// What SIGTERM does in production, without signalling the test process.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The value of one exposition line (`name{labels}`), `None` while the series does not exist.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The real server, in this process, on random loopback ports.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings(), Router::new()).await
}

pub async fn spawn_app_with(settings: Settings, extra: Router) -> TestApp {
    let app = Application::with_routes(settings, extra)
        .await
        .expect("application builds");
    let (api, metrics, readiness) = (app.api_addr(), app.metrics_addr(), app.readiness());
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    TestApp {
        api,
        metrics,
        readiness,
        client: reqwest::Client::new(),
        shutdown: Some(tx),
        server,
    }
}

/// The real binary, started with `env` on random loopback ports.
pub struct TestProcess {
    pub child: Child,
    pub api: SocketAddr,
    pub metrics: SocketAddr,
    pub logs: JoinHandle<Vec<String>>,
}

impl TestProcess {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    /// A URL on the metrics listener (`/metrics`, `/faults`).
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.metrics, path)
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id().expect("child is running") as i32)
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).expect("signal the child");
    }

    /// Waits for the exit (bounded) and returns its status and every log line.
    pub async fn finish(mut self, within: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the process exits in time")
            .expect("wait");
        (status, self.logs.await.expect("log reader"))
    }
}

/// The log target of this crate's module `module` (`startup` → `<crate>::startup`), for log
/// filters and for finding log lines: the package name with `_` for `-`, as Rust spells it.
pub fn log_target(module: &str) -> String {
    format!("{}::{module}", env!("CARGO_PKG_NAME").replace('-', "_"))
}

/// The service's binary (named after the package), with exactly `env`.
pub fn binary_command(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!(concat!("CARGO_BIN_EXE_", env!("CARGO_PKG_NAME"))));
    command
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

pub async fn spawn_process(extra_env: &[(&str, &str)]) -> TestProcess {
    spawn_process_from(process_command(extra_env)).await
}

/// The binary as `spawn_process` starts it, to adjust before `spawn_process_from`.
pub fn process_command(extra_env: &[(&str, &str)]) -> Command {
    let mut env: HashMap<&str, &str> = HashMap::from([
        ("APP__SERVER__HOST", "127.0.0.1"),
        ("APP__SERVER__PORT", "0"),
        ("APP__METRICS__HOST", "127.0.0.1"),
        ("APP__METRICS__PORT", "0"),
    ]);
    env.extend(extra_env.iter().copied());
    let env: Vec<(&str, &str)> = env.into_iter().collect();
    binary_command(&env)
}

/// Starts `command` (from `process_command`) and waits for its addresses.
pub async fn spawn_process_from(mut command: Command) -> TestProcess {
    let mut child = command.spawn().expect("start the binary");

    // Keep draining stdout so the child never blocks on a full pipe; hand over the first
    // "listening" line, which carries the bound addresses.
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = oneshot::channel::<serde_json::Value>();
    let logs = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut tx = Some(tx);
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                && json["message"] == "listening"
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(json);
            }
            all.push(line);
        }
        all
    });
    let listening = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("the server reports its addresses within 10 s")
        .expect("listening line");
    let addr = |field: &str| -> SocketAddr {
        listening[field]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{field} address in {listening}"))
    };
    TestProcess {
        api: addr("api"),
        metrics: addr("metrics"),
        child,
        logs,
    }
}
