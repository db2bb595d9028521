//! The real binary: settings errors, signals, the healthcheck subcommand.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{binary_command, log_target, spawn_process};
use nix::sys::signal::Signal;

async fn run_to_exit(env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        binary_command(env).args(args).output(),
    )
    .await
    .expect("exits in time")
    .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code().expect("exit code"), stderr)
}

#[tokio::test]
async fn bad_settings_exit_non_zero_naming_the_key_and_value() {
    let cases: [(&str, &str, &[&str]); 17] = [
        ("PORT", "abc", &["PORT", "abc"]),
        (
            "APP__SERVER__PORT",
            "70000",
            &["server.port", "APP__SERVER__PORT", "70000"],
        ),
        (
            "APP__SHUTDOWN__DRAIN_DELAY",
            "soon",
            &["shutdown.drain_delay", "soon"],
        ),
        ("APP__LOG__FORMAT", "xml", &["log.format", "xml"]),
        (
            "APP__CORS__ALLOWED_ORIGINS",
            "not-an-origin",
            &["cors.allowed_origins", "not-an-origin"],
        ),
        (
            "APP__TRACING__OTLP_ENDPOINT",
            "https://collector:4318",
            &["tracing.otlp_endpoint", "https://collector:4318"],
        ),
        (
            "APP__TRACING__OTLP_ENDPOINT",
            "http://collector:4318/v1/traces",
            &["tracing.otlp_endpoint", "/v1/traces is appended"],
        ),
        (
            "APP__TRACING__SAMPLE_RATIO",
            "1.5",
            &["tracing.sample_ratio", "1.5"],
        ),
        (
            "APP__FAULTS__ERROR_RATIO",
            "1.5",
            &["faults.error_ratio", "1.5", "between 0 and 1"],
        ),
        (
            "APP__FAULTS__LATENCY_RATIO",
            "-0.1",
            &["faults.latency_ratio", "-0.1"],
        ),
        (
            "APP__FAULTS__ERROR_STATUSES",
            "404",
            &["faults.error_statuses", "404"],
        ),
        (
            "APP__FAULTS__ERROR_STATUSES",
            "500,200",
            &["faults.error_statuses", "200"],
        ),
        (
            "APP__FAULTS__ERROR_STATUSES",
            "five hundred",
            &["faults.error_statuses", "five hundred"],
        ),
        (
            "APP__FAULTS__LATENCY_MIN",
            "2s",
            &["faults.latency_min", "2s", "latency_max"],
        ),
        (
            "APP__FAULTS__LATENCY_MAX",
            "2h",
            &["faults.latency_max", "2h"],
        ),
        (
            "APP__FAULTS__LATENCY_MAX",
            "soon",
            &["faults.latency_max", "soon"],
        ),
        (
            "APP__SERVER__PROT",
            "4000",
            &["APP__SERVER__PROT", "unknown"],
        ),
    ];
    for (key, value, expected) in cases {
        let (code, stderr) = run_to_exit(&[(key, value)], &[]).await;
        assert_eq!(code, 1, "{key}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{key}={value}: {stderr:?} lacks {needle:?}"
            );
        }
    }
}

#[tokio::test]
async fn metrics_port_equal_to_api_port_is_rejected_before_binding() {
    let env = [
        ("APP__SERVER__PORT", "4321"),
        ("APP__METRICS__PORT", "4321"),
    ];
    let (code, stderr) = run_to_exit(&env, &[]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("metrics.port") && stderr.contains("4321"),
        "{stderr}"
    );
}

#[tokio::test]
async fn port_env_sets_the_api_port_and_app_env_wins() {
    let (code, stderr) = run_to_exit(&[("PORT", "99999")], &[]).await;
    assert_eq!(code, 1, "PORT is validated: {stderr}");
    // PORT=1 would fail to bind (privileged); the helper's APP__SERVER__PORT=0 must win.
    let process = spawn_process(&[("PORT", "1")]).await;
    assert_ne!(process.api.port(), 1, "APP__SERVER__PORT overrides PORT");
}

#[tokio::test]
async fn healthcheck_subcommand_reports_the_local_server() {
    let process = spawn_process(&[("APP__SHUTDOWN__DRAIN_DELAY", "0s")]).await;
    let port = process.api.port().to_string();
    let (code, stderr) = run_to_exit(&[("APP__SERVER__PORT", &port)], &["healthcheck"]).await;
    assert_eq!(code, 0, "{stderr}");

    process.signal(Signal::SIGTERM);
    let (status, _) = process.finish(Duration::from_secs(15)).await;
    assert!(status.success());
    let (code, stderr) = run_to_exit(&[("APP__SERVER__PORT", &port)], &["healthcheck"]).await;
    assert_eq!(code, 1, "nothing listens any more: {stderr}");
    assert!(!stderr.is_empty());
}

#[tokio::test]
async fn sigterm_flips_readiness_at_once_and_exits_zero_after_the_drain() {
    let process = spawn_process(&[("APP__SHUTDOWN__DRAIN_DELAY", "1s")]).await;
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(process.url("/api/v1/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let sent = Instant::now();
    process.signal(Signal::SIGTERM);
    let flipped = loop {
        let status = client
            .get(process.url("/api/v1/ready"))
            .send()
            .await
            .unwrap()
            .status();
        if status == 503 {
            break sent.elapsed();
        }
        assert!(
            sent.elapsed() < Duration::from_millis(900),
            "readiness still {status}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let health = client
        .get(process.url("/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "still serving while draining");

    let (status, logs) = process.finish(Duration::from_secs(15)).await;
    assert!(status.success(), "exit {status}");
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "it waited for the drain delay"
    );
    assert!(
        flipped < Duration::from_millis(900),
        "flipped after {flipped:?}"
    );
    assert!(
        logs.iter().any(|l| l.contains("shutdown complete")),
        "{logs:#?}"
    );
}

#[tokio::test]
async fn sigint_shuts_down_the_same_way() {
    let process = spawn_process(&[("APP__SHUTDOWN__DRAIN_DELAY", "0s")]).await;
    process.signal(Signal::SIGINT);
    let (status, logs) = process.finish(Duration::from_secs(15)).await;
    assert!(status.success());
    assert!(logs.iter().any(|l| l.contains("SIGINT")), "{logs:#?}");
}

/// Load balancers stop routing to an instance once its readiness fails; a client that does the
/// same (here: the workers stop when the watcher sees 503) must never see a failed request.
#[tokio::test]
async fn no_request_fails_while_sigterm_arrives_under_concurrent_load() {
    let log_level = format!("warn,{}=info", log_target("startup"));
    let process = spawn_process(&[
        ("APP__SHUTDOWN__DRAIN_DELAY", "1s"),
        ("APP__LOG__LEVEL", &log_level),
    ])
    .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let routed = Arc::new(AtomicBool::new(true));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));

    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let (client, routed, ok, failed) =
            (client.clone(), routed.clone(), ok.clone(), failed.clone());
        let base = process.url("");
        workers.spawn(async move {
            let path = if worker % 2 == 0 {
                "/api/v1/info"
            } else {
                "/api/v1/health"
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while routed.load(Ordering::Acquire) && Instant::now() < deadline {
                let succeeded = match client.get(format!("{base}{path}")).send().await {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                let counter = if succeeded { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // The "load balancer": polls readiness and stops routing when it fails.
    let watcher = {
        let (client, routed, url) = (client.clone(), routed.clone(), process.url("/api/v1/ready"));
        tokio::spawn(async move {
            for _ in 0..4000 {
                if let Ok(r) = client.get(&url).send().await
                    && r.status() == 503
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            routed.store(false, Ordering::Release);
        })
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ok.load(Ordering::Relaxed);
    process.signal(Signal::SIGTERM);
    watcher.await.unwrap();
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
    let (status, _) = process.finish(Duration::from_secs(15)).await;

    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} succeeded ({before} before SIGTERM), {failed} failed");
    assert_eq!(failed, 0, "{failed} failed of {}", ok + failed);
    assert!(before > 100, "load was running before SIGTERM: {before}");
    assert!(ok > before, "requests in flight at SIGTERM completed");
    assert!(status.success(), "exit {status}");
}
