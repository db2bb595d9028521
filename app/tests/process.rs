//! The real binary: settings errors, signals, the healthcheck subcommand.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{binary_command, log_target, metric_value, spawn_process};
use nix::sys::signal::Signal;
use reqwest::header::{HeaderMap, HeaderValue};

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

/// `run_to_exit` with `var=value` on loopback port 0, in case the value is (wrongly) accepted
/// and the server starts.
async fn run_on_loopback(var: &str, value: &str) -> (i32, String) {
    let env = [
        ("APP__SERVER__HOST", "127.0.0.1"),
        ("APP__SERVER__PORT", "0"),
        ("APP__METRICS__HOST", "127.0.0.1"),
        ("APP__METRICS__PORT", "0"),
        (var, value),
    ];
    run_to_exit(&env, &[]).await
}

#[tokio::test]
async fn bad_settings_exit_non_zero_naming_the_key_and_value() {
    let cases: [(&str, &str, &[&str]); 20] = [
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
        // The config crate reads any number as a bool: 2 was taken as true.
        (
            "APP__INFO__ENABLED",
            "2",
            &["info.enabled", "2", "true or false"],
        ),
        ("APP__INFO__ENABLED", "yes", &["info.enabled", "yes"]),
        (
            "APP__SERVER__MAX_CONNECTIONS",
            "0",
            &["server.max_connections", "0"],
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
    // The draining 503s of /ready are expected: not logged as failures.
    let ready_503 = logs
        .iter()
        .filter(|l| l.contains(r#""status":503"#))
        .collect::<Vec<_>>();
    assert!(!ready_503.is_empty(), "{logs:#?}");
    assert!(
        ready_503.iter().all(|l| l.contains(r#""level":"INFO""#)),
        "{ready_503:#?}"
    );
}

#[tokio::test]
async fn a_settings_file_that_is_no_regular_file_is_read_or_named_for_what_it_is() {
    // /dev/null is an empty TOML document: the defaults.
    let process = spawn_process(&[("APP_CONFIG_FILE", "/dev/null")]).await;
    process.signal(Signal::SIGTERM);
    assert!(process.finish(Duration::from_secs(15)).await.0.success());
    let (code, stderr) = run_to_exit(&[("APP_CONFIG_FILE", "/tmp")], &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("/tmp") && stderr.contains("directory"),
        "{stderr}"
    );
    let (code, stderr) = run_to_exit(&[("APP_CONFIG_FILE", "/no/such.toml")], &[]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("/no/such.toml") && stderr.contains("No such file"),
        "{stderr}"
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

/// A bare word is a *target* to tracing's filter, so `warning` used to mean "only the target
/// `warning`" and the service started with no log line at all. A word that is no level is now
/// refused at start, naming the key; real filters keep working.
#[tokio::test]
async fn a_log_level_that_is_not_a_level_or_a_filter_is_refused_at_start() {
    // Arrange
    let typos = ["warning", "inf", "nonsense", "info,warning", "Information"];
    let startup_info = format!("warn,{}=info", log_target("startup"));
    let filters = ["info", "DEBUG", "info,hyper=warn", startup_info.as_str()];

    for typo in typos {
        // Act
        let (code, stderr) = run_on_loopback("APP__LOG__LEVEL", typo).await;

        // Assert
        assert_eq!(code, 1, "{typo}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains("log.level") && stderr.contains(&format!("{typo:?}")),
            "{typo}: {stderr}"
        );
    }
    for filter in filters {
        // Act: spawn_process waits for the startup's "listening" line, so the filter logs.
        let process = spawn_process(&[
            ("APP__LOG__LEVEL", filter),
            ("APP__SHUTDOWN__DRAIN_DELAY", "0s"),
        ])
        .await;
        process.signal(Signal::SIGTERM);
        let (status, _) = process.finish(Duration::from_secs(15)).await;

        // Assert
        assert!(status.success(), "{filter}: exit {status}");
    }
}

/// SIGHUP (a closed terminal, or an operator expecting a reload) used to kill the process on the
/// spot, failing every request in flight. It now shuts down as gracefully as SIGTERM.
#[tokio::test]
async fn sighup_drains_like_sigterm_and_finishes_the_request_in_flight() {
    // Arrange: every /info request is held 2 s, longer than the 1 s drain.
    let process = spawn_process(&[
        ("APP__SHUTDOWN__DRAIN_DELAY", "1s"),
        ("APP__FAULTS__LATENCY_RATIO", "1"),
        ("APP__FAULTS__LATENCY_MIN", "2s"),
        ("APP__FAULTS__LATENCY_MAX", "2s"),
    ])
    .await;
    let client = reqwest::Client::new();
    let in_flight = tokio::spawn(client.get(process.url("/api/v1/info")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act
    let sent = Instant::now();
    process.signal(Signal::SIGHUP);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = reqwest::Client::new()
        .get(process.url("/api/v1/ready"))
        .send()
        .await
        .expect("still serving during the drain")
        .status();
    let (status, logs) = process.finish(Duration::from_secs(15)).await;
    let exited = sent.elapsed();
    let finished = in_flight
        .await
        .unwrap()
        .expect("the request in flight completes");

    // Assert
    assert_eq!(ready, 503, "readiness fails at once");
    assert!(status.success(), "exit {status}");
    assert!(
        exited >= Duration::from_secs(1),
        "the drain delay: {exited:?}"
    );
    assert_eq!(finished.status(), 200);
    let received = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "shutdown signal received")
        .unwrap_or_else(|| panic!("no shutdown line: {logs:#?}"));
    assert_eq!(received["signal"], "SIGHUP", "{received}");
    assert!(
        logs.iter().any(|l| l.contains("shutdown complete")),
        "{logs:#?}"
    );
}

/// A duration is added to a clock reading: a huge one overflowed it, panicking every connection
/// (header timeout) or logging a wrapped number (drain delay). Each has a bound now.
#[tokio::test]
async fn a_duration_above_its_bound_is_refused_at_start_and_the_bound_itself_starts() {
    // Arrange
    let huge = [
        (
            "APP__SERVER__HEADER_READ_TIMEOUT",
            "500000000000y",
            "server.header_read_timeout",
        ),
        (
            "APP__SERVER__REQUEST_TIMEOUT",
            "500000000000y",
            "server.request_timeout",
        ),
        (
            "APP__SHUTDOWN__DRAIN_DELAY",
            "500000000000y",
            "shutdown.drain_delay",
        ),
        ("APP__SHUTDOWN__DRAIN_DELAY", "11m", "shutdown.drain_delay"),
        ("APP__SHUTDOWN__TIMEOUT", "1d", "shutdown.timeout"),
        ("APP__INFO__REFRESH_INTERVAL", "2h", "info.refresh_interval"),
    ];
    let at_the_bounds = [
        ("APP__SERVER__HEADER_READ_TIMEOUT", "1h"),
        ("APP__SERVER__REQUEST_TIMEOUT", "1h"),
        ("APP__INFO__REFRESH_INTERVAL", "1h"),
        ("APP__SHUTDOWN__DRAIN_DELAY", "10m"),
        ("APP__SHUTDOWN__TIMEOUT", "10m"),
    ];

    for (var, value, key) in huge {
        // Act
        let (code, stderr) = run_on_loopback(var, value).await;

        // Assert
        assert_eq!(code, 1, "{var}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(key), "{var}={value}: {stderr}");
    }

    // Act
    let mut process = spawn_process(&at_the_bounds).await;
    let health = reqwest::Client::new()
        .get(process.url("/api/v1/health"))
        .send()
        .await;

    // Assert: a connection is served (the header timer is armed without a panic).
    assert_eq!(health.expect("served").status(), 200);
    // A 10 min drain is not waited for here.
    process.child.kill().await.expect("kill the child");
}

/// The client's `x-request-id` is echoed and logged only when it is one value of 1 to 128 visible
/// ASCII characters (a quote or a backslash is escaped in the line); anything else (huge, empty, non-ASCII, with a control character or a space,
/// or sent twice) is replaced by a generated one, on the response and the log line alike.
#[tokio::test]
async fn an_unusable_client_request_id_is_replaced_by_a_generated_one() {
    // Arrange: each case is the x-request-id headers of one request.
    let process = spawn_process(&[("APP__SHUTDOWN__DRAIN_DELAY", "0s")]).await;
    let client = reqwest::Client::new();
    let long = "a".repeat(15_000);
    let unusable: [&[&[u8]]; 7] = [
        &[long.as_bytes()],
        &[b""],
        &["caf\u{e9}-\u{1f600}".as_bytes()],
        &[b"a\tb"],
        &[b"two words"],
        &[&[b'x'; 129]],
        &[b"first", b"second"],
    ];
    let longest = "k".repeat(128);
    // A quote and a backslash are visible ASCII too: kept, and escaped in the JSON line.
    let kept: [&[&[u8]]; 4] = [
        &[b"abc-123"],
        &[br#"say"hi\now"#],
        &[b"0f8fad5b-d9cb-469f-a165-70867728950e"],
        &[longest.as_bytes()],
    ];

    // Act
    let mut echoed = Vec::new();
    for ids in unusable.iter().chain(&kept) {
        let mut headers = HeaderMap::new();
        for id in *ids {
            headers.append("x-request-id", HeaderValue::from_bytes(id).unwrap());
        }
        let response = client
            .get(process.url("/api/v1/health"))
            .headers(headers)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        echoed.push(response.headers()["x-request-id"].as_bytes().to_vec());
    }
    process.signal(Signal::SIGTERM);
    let (_, logs) = process.finish(Duration::from_secs(15)).await;

    // Assert
    let request_log = log_target("http");
    let logged: Vec<String> = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == request_log.as_str())
        .map(|l| {
            l["span"]["request_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        logged.len(),
        echoed.len(),
        "one line per request: {logs:#?}"
    );
    let sent = unusable.iter().chain(&kept);
    for (n, ((ids, echoed), logged)) in sent.zip(&echoed).zip(&logged).enumerate() {
        let shown: Vec<String> = ids
            .iter()
            .map(|id| String::from_utf8_lossy(id).chars().take(40).collect())
            .collect();
        if n < unusable.len() {
            assert!(!ids.contains(&echoed.as_slice()), "{shown:?} was echoed");
            assert_eq!(echoed.len(), 36, "a generated UUID for {shown:?}");
        } else {
            assert!(
                ids == &[echoed.as_slice()],
                "{shown:?}, usable, was replaced"
            );
        }
        assert!(
            logged.as_bytes() == echoed,
            "{shown:?}: the log line carries {logged:?}, not the id the client got"
        );
    }
}

#[tokio::test]
async fn the_text_log_format_writes_no_colour_codes_to_a_pipe() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    // Arrange: the text format, its output a pipe (as under Docker, systemd or a log shipper).
    let mut child = binary_command(&[
        ("APP__LOG__FORMAT", "text"),
        ("APP__SERVER__HOST", "127.0.0.1"),
        ("APP__SERVER__PORT", "0"),
        ("APP__METRICS__HOST", "127.0.0.1"),
        ("APP__METRICS__PORT", "0"),
    ])
    .spawn()
    .expect("start the binary");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();

    // Act: read the start-up line.
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("a log line within 10 s")
        .expect("readable")
        .expect("a line");
    child.kill().await.expect("stopped");

    // Assert: plain text, no ANSI escape sequences for the reader of the file to strip.
    assert!(line.contains("listening"), "{line:?}");
    assert!(!line.contains('\x1b'), "colour codes in {line:?}");
}

/// After a start, every route's 5xx series is on `/metrics` at 0 before any request, so the
/// first error (here injected) has an earlier sample and `rate()` counts it. With `/info`
/// turned off, the route is not mounted and has no series.
#[tokio::test]
async fn every_routes_5xx_series_exists_at_zero_from_the_start() {
    let series = |status: u16, route: &str| {
        format!(r#"http_requests_total{{method="GET",status="{status}",endpoint="{route}"}}"#)
    };
    let process = spawn_process(&[]).await;
    let client = reqwest::Client::new();
    let scrape = || async {
        let response = client.get(process.admin_url("/metrics")).send().await;
        response.expect("scrape").text().await.expect("text")
    };

    let before = scrape().await;
    for route in ["/api/v1/health", "/api/v1/ready", "/api/v1/info"] {
        for status in [500, 503, 504] {
            let series = series(status, route);
            assert_eq!(
                metric_value(&before, &series),
                Some(0.0),
                "{series}\n{before}"
            );
        }
    }
    assert!(
        !before.contains(r#"status="200""#),
        "no request yet: {before}"
    );

    let faults = client
        .put(process.admin_url("/faults"))
        .body(r#"{"error_ratio": 1.0, "error_statuses": [500]}"#)
        .send()
        .await
        .expect("switch faults on");
    assert_eq!(faults.status(), 200);
    let response = client.get(process.url("/api/v1/info")).send().await;
    assert_eq!(response.expect("request").status(), 500);
    let after = scrape().await;
    let info_500 = series(500, "/api/v1/info");
    assert_eq!(metric_value(&after, &info_500), Some(1.0), "{after}");

    let without_info = spawn_process(&[("APP__INFO__ENABLED", "false")]).await;
    let text = client
        .get(without_info.admin_url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    assert!(
        metric_value(&text, &series(500, "/api/v1/health")).is_some(),
        "{text}"
    );
    assert!(!text.contains("/api/v1/info"), "{text}");
}
