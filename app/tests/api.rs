//! The real server on random ports, exercised over real sockets.

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::{metric_value, spawn_app, spawn_app_with, test_settings};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ENDPOINTS: [&str; 3] = ["/api/v1/health", "/api/v1/ready", "/api/v1/info"];

#[tokio::test]
async fn every_endpoint_answers_json_over_http() {
    let app = spawn_app().await;
    for path in ENDPOINTS {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{path}"
        );
        let body: Value = response.json().await.expect("JSON");
        assert!(body.is_object(), "{path}: {body}");
    }
    assert_eq!(
        app.get("/api/v1/health").await.text().await.unwrap(),
        r#"{"success":true}"#
    );
}

#[tokio::test]
async fn metrics_live_on_their_own_port_only() {
    let app = spawn_app().await;
    assert_ne!(app.api.port(), app.metrics.port());
    assert_eq!(
        app.get("/metrics").await.status(),
        404,
        "not on the API port"
    );
    let text = app.scrape().await;
    assert!(
        text.contains("# TYPE http_requests_total counter"),
        "{text}"
    );
}

#[tokio::test]
async fn scraped_metrics_have_the_contract_names_labels_and_buckets() {
    let app = spawn_app().await;
    app.get("/api/v1/health").await;
    app.get("/api/v1/info").await;
    app.get("/does/not/exist").await;
    app.client
        .delete(app.url("/api/v1/health"))
        .send()
        .await
        .unwrap();
    app.scrape().await; // scrapes are not counted: checked below
    let text = app.scrape().await;

    for bucket in backend::metrics::LATENCY_BUCKETS {
        let series = format!(
            r#"http_request_duration_seconds_bucket{{method="GET",status="200",endpoint="/api/v1/health",le="{bucket}"}}"#
        );
        assert!(text.contains(&series), "missing {series}\n{text}");
    }
    assert!(
        text.contains(r#"le="0.15""#),
        "the SLO threshold is a bucket boundary"
    );
    for series in [
        r#"http_request_duration_seconds_count{method="GET",status="200",endpoint="/api/v1/info"} 1"#,
        r#"http_requests_total{method="GET",status="200",endpoint="/api/v1/health"} 1"#,
        r#"http_requests_total{method="GET",status="404",endpoint="unmatched"} 1"#,
        r#"http_requests_total{method="DELETE",status="405",endpoint="/api/v1/health"} 1"#,
        r#"http_requests_pending{method="GET",endpoint="/api/v1/info"} 0"#,
        "# TYPE http_request_duration_seconds histogram",
        "# TYPE http_requests_pending gauge",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(series), "missing {series}\n{text}");
    }
    let build_info = format!(
        r#"build_info{{version="{}",revision="#,
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&build_info), "missing {build_info}\n{text}");
    assert!(
        !text.contains("/metrics"),
        "scrapes must not be counted\n{text}"
    );
    assert!(
        !text.contains("does/not/exist"),
        "raw paths never become labels"
    );
}

/// The value of one exposition line, 0 when the series does not exist yet.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Repeats are answered from the HTTP layer's remembered handles (src/metrics/http_layer.rs):
/// each label set must keep counting into its own series. Deltas, because the recorder is
/// process-wide and `cargo test` runs the tests of this file in one process.
#[tokio::test]
async fn repeated_requests_count_into_their_own_series() {
    let app = spawn_app().await;
    let expected = [
        (
            r#"http_requests_total{method="GET",status="200",endpoint="/api/v1/health"}"#,
            3.0,
        ),
        (
            r#"http_requests_total{method="GET",status="200",endpoint="/api/v1/info"}"#,
            6.0,
        ),
        (
            r#"http_requests_total{method="GET",status="404",endpoint="unmatched"}"#,
            3.0,
        ),
        (
            r#"http_request_duration_seconds_count{method="GET",status="200",endpoint="/api/v1/health"}"#,
            3.0,
        ),
        (
            r#"http_request_duration_seconds_count{method="GET",status="200",endpoint="/api/v1/info"}"#,
            6.0,
        ),
    ];
    let before = app.scrape().await;

    for _ in 0..3 {
        app.get("/api/v1/health").await;
        app.get("/api/v1/info").await;
        app.get("/api/v1/info").await;
        app.get("/nope").await;
    }

    let after = app.scrape().await;
    for (series, delta) in expected {
        assert_eq!(
            sample(&after, series) - sample(&before, series),
            delta,
            "{series}\n{after}"
        );
    }
}

/// `rate()` needs an earlier sample: a 5xx series created by its first error would never count
/// that error. A route's first request creates its 5xx series at zero, beside its own status.
#[tokio::test]
async fn a_routes_first_request_creates_its_5xx_series_at_zero() {
    // Arrange
    let app = spawn_app().await;

    // Act
    assert_eq!(app.get("/api/v1/info").await.status(), 200);
    assert_eq!(app.get("/not/a/route").await.status(), 404);
    let text = app.scrape().await;

    // Assert
    let series = |status: &str| {
        format!(r#"http_requests_total{{method="GET",status="{status}",endpoint="/api/v1/info"}}"#)
    };
    assert_eq!(metric_value(&text, &series("200")), Some(1.0), "{text}");
    for status in ["500", "503", "504"] {
        assert_eq!(metric_value(&text, &series(status)), Some(0.0), "{text}");
    }
    assert!(
        !text.contains(r#"method="HEAD""#),
        "only the (method, route) pairs seen: {text}"
    );
    for status in ["500", "503", "504"] {
        assert!(
            !text.contains(&format!(r#"status="{status}",endpoint="unmatched""#)),
            "no 5xx series for unmatched paths: {text}"
        );
    }
}

/// Burns CPU in this process (the server's) for about `period`.
fn burn_cpu(period: Duration) {
    let started = Instant::now();
    let mut x = 1u64;
    while started.elapsed() < period {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    std::hint::black_box(x);
}

/// `process_cpu_seconds_total` keeps its fraction: `rate()` of whole seconds reads 0 for a
/// service that uses less than a core-second per scrape interval.
#[tokio::test]
async fn cpu_seconds_are_scraped_with_their_fraction() {
    let app = spawn_app().await;
    let mut seen = Vec::new();
    // Bounded: at most 20 rounds of 50 ms; a whole number can occur once in a while, not always.
    for _ in 0..20 {
        burn_cpu(Duration::from_millis(50));
        let text = app.scrape().await;
        let cpu = metric_value(&text, "process_cpu_seconds_total").expect("the CPU series");
        if cpu > 0.0 && cpu.fract() != 0.0 {
            return;
        }
        seen.push(cpu);
    }
    panic!("process_cpu_seconds_total stayed a whole number: {seen:?}");
}

#[tokio::test]
async fn ten_thousand_unknown_paths_keep_metrics_small() {
    let app = spawn_app().await;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let (client, base) = (app.client.clone(), app.url(""));
        tasks.spawn(async move {
            for i in 0..625 {
                let url = format!("{base}/random/{worker}/{i}/{}", i * 7919 + worker);
                let status = client.get(url).send().await.expect("request").status();
                assert_eq!(status, 404);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("worker");
    }
    assert!(started.elapsed() < Duration::from_secs(120), "bounded loop");
    let text = app.scrape().await;
    assert!(
        text.contains(
            r#"http_requests_total{method="GET",status="404",endpoint="unmatched"} 10000"#
        ),
        "{text}"
    );
    assert!(
        text.len() < 10 * 1024,
        "/metrics is {} bytes after 10k unknown paths",
        text.len()
    );
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.api).await.unwrap();
    let big = "a".repeat(32 * 1024);
    let request = format!("GET /api/v1/health HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let head = String::from_utf8_lossy(&response);
    assert!(head.starts_with("HTTP/1.1 431"), "got: {head}");
}

#[tokio::test]
async fn a_slowloris_connection_is_closed_after_the_header_timeout() {
    let mut settings = test_settings();
    settings.server.header_read_timeout = Duration::from_millis(300);
    let app = spawn_app_with(settings, Router::new()).await;

    let mut stream = TcpStream::connect(app.api).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    let elapsed = started.elapsed();
    assert!(
        read.is_ok(),
        "the server must close the connection, not wait forever"
    );
    assert!(
        elapsed >= Duration::from_millis(250),
        "closed only after the timeout: {elapsed:?}"
    );
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "no response to a partial head"
    );

    // A complete request on a fresh connection still works.
    assert_eq!(app.get("/api/v1/health").await.status(), 200);
}

#[tokio::test]
async fn a_panic_is_a_500_and_the_server_keeps_serving() {
    async fn boom() -> &'static str {
        panic!("handler bug")
    }
    let app = spawn_app_with(test_settings(), Router::new().route("/boom", get(boom))).await;
    let response = app.get("/boom").await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal");
    assert_eq!(app.get("/api/v1/health").await.status(), 200);
    assert!(
        app.scrape()
            .await
            .contains(r#"status="500",endpoint="/boom""#),
        "panics are counted"
    );
}

#[tokio::test]
async fn shutdown_flips_readiness_drains_then_finishes_in_flight_requests() {
    let mut settings = test_settings();
    settings.shutdown.drain_delay = Duration::from_millis(400);
    let slow = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            "done"
        }),
    );
    let mut app = spawn_app_with(settings, slow).await;

    let in_flight = tokio::spawn(app.client.get(app.url("/slow")).send());
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Draining: not ready, but still serving new connections.
    assert_eq!(app.get("/api/v1/ready").await.status(), 503);
    let fresh = reqwest::Client::new();
    let health = fresh.get(app.url("/api/v1/health")).send().await.unwrap();
    assert_eq!(
        health.status(),
        200,
        "serving continues during the drain delay"
    );

    // After the drain delay the listener is closed, and the slow request still completes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        TcpStream::connect(app.api).await.is_err(),
        "no new connections after the drain delay"
    );
    let slow = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(slow.status(), 200);
    assert_eq!(slow.text().await.unwrap(), "done");
    tokio::time::timeout(Duration::from_secs(5), app.server)
        .await
        .expect("the server stops")
        .unwrap()
        .expect("clean shutdown");
}

#[tokio::test]
async fn shutdown_is_bounded_by_the_timeout() {
    let mut settings = test_settings();
    settings.shutdown.timeout = Duration::from_millis(300);
    let stuck = Router::new().route(
        "/stuck",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }),
    );
    let mut app = spawn_app_with(settings, stuck).await;
    let _in_flight = tokio::spawn(app.client.get(app.url("/stuck")).send());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    app.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(5), app.server)
        .await
        .expect("shutdown does not wait for a stuck request")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// RFC 9112 §3.2: an HTTP/1.1 request without exactly one `Host` header gets 400. HTTP/1.0 may
/// omit it.
#[tokio::test]
async fn an_http_1_1_request_without_exactly_one_host_is_a_400() {
    let app = spawn_app().await;
    let send = |head: &'static str| async move {
        let mut stream = TcpStream::connect(app.api).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    };
    for head in [
        "GET /api/v1/health HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /api/v1/health HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    ] {
        let answer = send(head).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{head:?}: {answer}");
        assert!(answer.contains(r#""code":"bad_request""#), "{answer}");
        assert!(answer.contains("x-request-id"), "{answer}");
    }
    let answer = send("GET /api/v1/health HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    let answer = send("GET /api/v1/health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Sends `bytes` on one connection and returns everything until the server closes it.
async fn raw_exchange(app: &common::TestApp, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(app.api).await.expect("connect");
    stream.write_all(bytes).await.expect("send");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
    read.await.expect("the server closes").expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// A body is limited whether it has a length or comes in chunks, and a body no handler reads
/// does not cost the connection: the request behind it is answered too.
#[tokio::test]
async fn every_body_is_limited_and_an_unread_one_leaves_the_connection_usable() {
    let app = spawn_app().await;
    let last = "GET /api/v1/health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let chunked = |size: usize| {
        format!(
            "GET /api/v1/health HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{size:x}\r\n{}\r\n0\r\n\r\n",
            "a".repeat(size)
        )
    };

    let big = raw_exchange(&app, format!("{}{last}", chunked(200_000)).as_bytes()).await;
    assert!(
        big.starts_with("HTTP/1.1 413"),
        "{}",
        &big[..big.len().min(300)]
    );
    assert!(big.contains(r#""code":"payload_too_large""#), "{big}");

    for first in [
        chunked(1_000),
        format!(
            "GET /api/v1/health HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n{}",
            "a".repeat(1_000)
        ),
    ] {
        let answer = raw_exchange(&app, format!("{first}{last}").as_bytes()).await;
        assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    }
}

/// `Allow` belongs to `405`: a wrong method with a body over the limit gets `413` without it.
#[tokio::test]
async fn only_a_405_carries_allow() {
    let app = spawn_app().await;
    let head = "POST /api/v1/health HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(&app, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("\r\nallow:"),
        "{answer}"
    );
    let head = "POST /api/v1/health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(&app, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("\r\nallow: get,head"),
        "{answer}"
    );
}
