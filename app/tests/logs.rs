//! The real binary's log lines: batched by a writer thread (telemetry/sink.rs), none lost at
//! exit, and a stdout nobody reads (a stalled log collector) never stalls a request.

mod common;

use std::time::{Duration, Instant};

use common::{log_target, metric_value, process_command, spawn_process};
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn every_request_line_is_written_whole_by_the_exit() {
    // Arrange
    let process = spawn_process(&[("APP__SHUTDOWN__DRAIN_DELAY", "0s")]).await;
    let client = reqwest::Client::new();

    // Act: requests in quick succession, then SIGTERM while lines are still being batched.
    let sent = 2_000;
    for i in 0..sent {
        let path = if i % 2 == 0 {
            "/api/v1/health"
        } else {
            "/nope"
        };
        client.get(process.url(path)).send().await.unwrap();
    }
    process.signal(Signal::SIGTERM);
    let (status, logs) = process.finish(Duration::from_secs(15)).await;

    // Assert
    assert!(status.success(), "exit {status}");
    let lines: Vec<serde_json::Value> = logs
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let requests = lines
        .iter()
        .filter(|l| l["target"] == log_target("http").as_str())
        .count();
    assert_eq!(requests, sent, "one line per request");
    assert_eq!(
        lines.last().unwrap()["message"],
        "shutdown complete",
        "the last line is written too"
    );
}

/// docs/contract.md: a killed process loses at most the last ~10 ms of lines (the batch delay).
#[tokio::test]
async fn a_killed_process_has_written_every_line_older_than_the_batch_delay() {
    // Arrange
    let process = spawn_process(&[]).await;
    let client = reqwest::Client::new();
    let sent = 500;
    for _ in 0..sent {
        client
            .get(process.url("/api/v1/health"))
            .send()
            .await
            .unwrap();
    }

    // Act: well past the batch delay, then no chance to flush anything.
    tokio::time::sleep(Duration::from_millis(200)).await;
    process.signal(Signal::SIGKILL);
    let (status, logs) = process.finish(Duration::from_secs(15)).await;

    // Assert
    assert!(!status.success(), "killed: {status}");
    let requests = logs
        .iter()
        .filter(|l| l.contains(&format!("\"target\":\"{}\"", log_target("http"))))
        .count();
    assert_eq!(
        requests, sent,
        "every line older than the batch delay was written"
    );
}

#[tokio::test]
async fn a_stdout_nobody_reads_drops_counted_lines_and_never_stalls_a_request() {
    // Arrange: read stdout up to the "listening" line, then stop reading: the pipe fills
    // (64 KiB), as it does when a log collector stalls.
    let mut child = process_command(&[("APP__SHUTDOWN__DRAIN_DELAY", "0s")])
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), stdout.next_line())
            .await
            .expect("listening within 10 s")
            .unwrap()
            .expect("a line");
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        if json["message"] == "listening" {
            break json;
        }
    };
    let (api, admin) = (&listening["api"], &listening["metrics"]);
    let (api, admin) = (api.as_str().unwrap(), admin.as_str().unwrap());
    let client = reqwest::Client::new();

    // Act: far more lines than the pipe and the sink's buffer (1 MiB) hold together: 404s
    // with a 3,000-byte path, which their lines carry.
    let sent = 1_000;
    let url = format!("http://{api}/{}", "a".repeat(3_000));
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..sent {
        let one = Instant::now();
        let response = tokio::time::timeout(Duration::from_secs(5), client.get(&url).send())
            .await
            .expect("answered although nobody reads the log")
            .unwrap();
        assert_eq!(response.status(), 404);
        slowest = slowest.max(one.elapsed());
    }
    let elapsed = started.elapsed();
    let metrics = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // Assert: the excess is counted, and requests went on at full speed.
    let dropped = metric_value(&metrics, "log_lines_dropped_total").expect("the counter");
    assert!(
        dropped >= (sent / 2) as f64,
        "{dropped} of {sent} lines dropped"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "slowest request {slowest:?} ({sent} in {elapsed:?})"
    );

    // Reading again lets the writer finish; the process exits cleanly.
    let reader = tokio::spawn(async move {
        let mut lines = 0;
        while let Ok(Some(line)) = stdout.next_line().await {
            serde_json::from_str::<serde_json::Value>(&line)
                .unwrap_or_else(|e| panic!("{e}: {line}"));
            lines += 1;
        }
        lines
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert!(status.success(), "exit {status}");
    let written = reader.await.unwrap();
    assert!(written > 0);
}

/// A filter on the request span's fields (docs/contract.md) needs the span, which a request
/// only gets when something reads it (`telemetry::request_spans`): here the filter does.
#[tokio::test]
async fn a_filter_on_the_request_spans_fields_selects_its_lines() {
    // Arrange: request lines at warn, except for one route's.
    let level = format!(
        "info,{http}=warn,{krate}[request{{route=/api/v1/health}}]=info",
        http = log_target("http"),
        krate = log_target("x").trim_end_matches("::x"),
    );
    let process = spawn_process(&[
        ("APP__LOG__LEVEL", level.as_str()),
        ("APP__SHUTDOWN__DRAIN_DELAY", "0s"),
    ])
    .await;
    let client = reqwest::Client::new();

    // Act
    for path in ["/api/v1/health", "/api/v1/info", "/api/v1/health"] {
        client.get(process.url(path)).send().await.unwrap();
    }
    process.signal(Signal::SIGTERM);
    let (_, logs) = process.finish(Duration::from_secs(15)).await;

    // Assert
    let routes: Vec<String> = logs
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["target"] == log_target("http").as_str())
        .map(|l| l["span"]["route"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(routes, ["/api/v1/health", "/api/v1/health"], "{logs:#?}");
}

/// The request line obeys `log.level` for its target like any event (it is written without
/// one when the JSON lines are its only reader: `telemetry::request_line`).
#[tokio::test]
async fn the_request_line_can_be_turned_off_by_its_target() {
    // Arrange
    let level = format!("info,{}=off", log_target("http"));
    let process = spawn_process(&[
        ("APP__LOG__LEVEL", level.as_str()),
        ("APP__SHUTDOWN__DRAIN_DELAY", "0s"),
    ])
    .await;
    let client = reqwest::Client::new();

    // Act
    for path in ["/api/v1/health", "/nope"] {
        client.get(process.url(path)).send().await.unwrap();
    }
    process.signal(Signal::SIGTERM);
    let (status, logs) = process.finish(Duration::from_secs(15)).await;

    // Assert: the other lines are there, the request lines are not.
    assert!(status.success(), "exit {status}");
    assert!(
        logs.iter().any(|l| l.contains("shutdown complete")),
        "{logs:#?}"
    );
    let http = format!("\"target\":\"{}\"", log_target("http"));
    assert!(!logs.iter().any(|l| l.contains(&http)), "{logs:#?}");
}
