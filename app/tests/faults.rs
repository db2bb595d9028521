//! Fault injection (docs/contract.md, "Faults"): off by default; switched at runtime on the
//! metrics listener only; applied to the API routes but never to the probes; every injected
//! fault counted, and injected errors counted by the HTTP metrics like real ones.

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use common::{TestApp, log_target, metric_value, spawn_app, spawn_app_with, spawn_process};
use nix::sys::signal::Signal;
use serde_json::Value;

const INFO_500: &str = r#"http_requests_total{method="GET",status="500",endpoint="/api/v1/info"}"#;
const INJECTED_ERRORS_INFO: &str = r#"faults_injected_total{kind="error",endpoint="/api/v1/info"}"#;
const INJECTED_LATENCY_INFO: &str =
    r#"faults_injected_total{kind="latency",endpoint="/api/v1/info"}"#;

/// Asserts the `/faults` JSON: every field, numbers compared as numbers.
fn assert_faults(faults: &Value, error_ratio: f64, statuses: &[u64], latency: (f64, &str, &str)) {
    let (latency_ratio, latency_min, latency_max) = latency;
    assert_eq!(
        faults["error_ratio"].as_f64(),
        Some(error_ratio),
        "{faults}"
    );
    let got: Vec<u64> = faults["error_statuses"]
        .as_array()
        .unwrap_or_else(|| panic!("error_statuses in {faults}"))
        .iter()
        .map(|s| s.as_u64().expect("a status number"))
        .collect();
    assert_eq!(got, statuses, "{faults}");
    assert_eq!(
        faults["latency_ratio"].as_f64(),
        Some(latency_ratio),
        "{faults}"
    );
    assert_eq!(faults["latency_min"], latency_min, "{faults}");
    assert_eq!(faults["latency_max"], latency_max, "{faults}");
    assert_eq!(faults.as_object().map(|o| o.len()), Some(5), "{faults}");
}

async fn get_faults(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.admin_url("/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

async fn status_of(app: &TestApp, path: &str) -> u16 {
    app.get(path).await.status().as_u16()
}

#[tokio::test]
async fn faults_are_off_by_default_and_nothing_is_injected() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let faults = get_faults(&app).await;
    let mut statuses = Vec::new();
    for _ in 0..50 {
        statuses.push(status_of(&app, "/api/v1/info").await);
    }

    // Assert
    assert_faults(&faults, 0.0, &[500], (0.0, "0s", "0s"));
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let text = app.scrape().await;
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("faults_injected_total{")),
        "{text}"
    );
}

#[tokio::test]
async fn a_fault_set_on_the_metrics_port_takes_effect_at_once_and_delete_removes_it() {
    // Arrange
    let app = spawn_app().await;
    assert_eq!(status_of(&app, "/api/v1/info").await, 200);

    // Act: on
    let (status, answer) = app
        .put_faults(r#"{"error_ratio":1,"error_statuses":[503]}"#)
        .await;

    // Assert: the answer is the new set, and the next request is faulted
    assert_eq!(status, 200, "{answer}");
    assert_faults(&answer, 1.0, &[503], (0.0, "0s", "0s"));
    assert_faults(&get_faults(&app).await, 1.0, &[503], (0.0, "0s", "0s"));
    let response = app.get("/api/v1/info").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"]["code"], "injected_fault", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    // Act: off
    let response = app
        .client
        .delete(app.admin_url("/faults"))
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(response.status(), 200);
    assert_faults(
        &response.json().await.unwrap(),
        0.0,
        &[500],
        (0.0, "0s", "0s"),
    );
    assert_faults(&get_faults(&app).await, 0.0, &[500], (0.0, "0s", "0s"));
    assert_eq!(status_of(&app, "/api/v1/info").await, 200);
}

#[tokio::test]
async fn faults_are_not_served_on_the_api_port() {
    let app = spawn_app().await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let response = app
            .client
            .request(method.clone(), app.url("/faults"))
            .body(r#"{"error_ratio":1}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{method} /faults on the API port");
    }
    assert_faults(&get_faults(&app).await, 0.0, &[500], (0.0, "0s", "0s"));
}

#[tokio::test]
async fn probes_and_metrics_are_never_faulted() {
    // Arrange: every API request fails, after a second
    let app = spawn_app().await;
    let (status, answer) = app
        .put_faults(r#"{"error_ratio":1,"latency_ratio":1,"latency_min":"1s","latency_max":"1s"}"#)
        .await;
    assert_eq!(status, 200, "{answer}");

    // Act
    let started = Instant::now();
    let mut probes = Vec::new();
    for _ in 0..10 {
        probes.push(status_of(&app, "/api/v1/health").await);
        probes.push(status_of(&app, "/api/v1/ready").await);
    }
    let text = app.scrape().await;
    let probes_took = started.elapsed();

    // Assert
    assert!(probes.iter().all(|s| *s == 200), "{probes:?}");
    assert!(
        probes_took < Duration::from_secs(1),
        "probes and /metrics are not delayed: {probes_took:?}"
    );
    for endpoint in ["/api/v1/health", "/api/v1/ready"] {
        assert!(
            !text.contains(&format!(
                r#"faults_injected_total{{kind="error",endpoint="{endpoint}""#
            )),
            "{text}"
        );
    }
    assert_eq!(status_of(&app, "/api/v1/info").await, 500, "the API is");
}

#[tokio::test]
async fn injected_errors_count_in_the_http_metrics_like_real_errors() {
    // Arrange
    let app = spawn_app().await;
    app.put_faults(r#"{"error_ratio":1}"#).await;

    // Act
    for _ in 0..25 {
        assert_eq!(status_of(&app, "/api/v1/info").await, 500);
    }

    // Assert
    let text = app.scrape().await;
    assert_eq!(metric_value(&text, INFO_500), Some(25.0), "{text}");
    assert_eq!(
        metric_value(&text, INJECTED_ERRORS_INFO),
        Some(25.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE faults_injected_total counter"),
        "{text}"
    );
}

#[tokio::test]
async fn error_ratio_is_the_share_of_requests_failed_with_the_chosen_statuses() {
    // Arrange
    let app = spawn_app().await;
    let (status, answer) = app
        .put_faults(r#"{"error_ratio":0.5,"error_statuses":[500,502,503]}"#)
        .await;
    assert_eq!(status, 200, "{answer}");

    // Act
    let mut counts = std::collections::BTreeMap::<u16, u32>::new();
    for _ in 0..400 {
        *counts
            .entry(status_of(&app, "/api/v1/info").await)
            .or_default() += 1;
    }

    // Assert: 200 ± 80 failures (the standard deviation is 10), each chosen status seen
    let failed: u32 = counts
        .iter()
        .filter(|(s, _)| **s != 200)
        .map(|(_, n)| n)
        .sum();
    assert!((120..=280).contains(&failed), "{counts:?}");
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        [200, 500, 502, 503],
        "{counts:?}"
    );
    let text = app.scrape().await;
    assert_eq!(
        metric_value(&text, INJECTED_ERRORS_INFO),
        Some(f64::from(failed)),
        "{text}"
    );
}

#[tokio::test]
async fn injected_latency_delays_the_response_and_is_counted() {
    // Arrange
    let app = spawn_app().await;
    let (status, answer) = app
        .put_faults(r#"{"latency_ratio":1,"latency_min":"150ms","latency_max":"250ms"}"#)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_faults(&answer, 0.0, &[500], (1.0, "150ms", "250ms"));

    // Act
    let mut took = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(status_of(&app, "/api/v1/info").await, 200);
        took.push(started.elapsed());
    }

    // Assert
    assert!(
        took.iter().all(|t| *t >= Duration::from_millis(150)),
        "{took:?}"
    );
    let text = app.scrape().await;
    assert_eq!(
        metric_value(&text, INJECTED_LATENCY_INFO),
        Some(5.0),
        "{text}"
    );
    let latency_sum = metric_value(
        &text,
        r#"http_request_duration_seconds_sum{method="GET",status="200",endpoint="/api/v1/info"}"#,
    )
    .expect("the latency histogram");
    assert!(
        latency_sum >= 0.75,
        "the histogram sees the delay: {latency_sum}"
    );
}

#[tokio::test]
async fn injected_latency_beyond_the_request_timeout_is_a_504() {
    // Arrange
    let mut settings = common::test_settings();
    settings.server.request_timeout = Duration::from_millis(100);
    let app = spawn_app_with(settings, Router::new()).await;
    app.put_faults(r#"{"latency_ratio":1,"latency_min":"5s","latency_max":"5s"}"#)
        .await;

    // Act
    let started = Instant::now();
    let response = app.get("/api/v1/info").await;
    let took = started.elapsed();

    // Assert
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    assert!(
        took < Duration::from_secs(2),
        "cut by the timeout: {took:?}"
    );
    let text = app.scrape().await;
    assert_eq!(
        metric_value(&text, INJECTED_LATENCY_INFO),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_bad_fault_body_is_refused_with_the_error_shape_and_changes_nothing() {
    // Arrange
    let app = spawn_app().await;
    let (status, _) = app.put_faults(r#"{"error_ratio":0.25}"#).await;
    assert_eq!(status, 200);
    let cases = [
        (r#"{"error_ratio":1.5}"#, 422, "error_ratio"),
        (r#"{"latency_ratio":-0.1}"#, 422, "latency_ratio"),
        (r#"{"error_statuses":[404]}"#, 422, "error_statuses"),
        (r#"{"error_statuses":[500,200]}"#, 422, "error_statuses"),
        (r#"{"error_statuses":[]}"#, 422, "error_statuses"),
        (
            r#"{"latency_min":"2s","latency_max":"1s"}"#,
            422,
            "latency_min",
        ),
        (r#"{"latency_max":"2h"}"#, 422, "latency_max"),
        (r#"{"latency_max":"soon"}"#, 422, "latency_max"),
        (r#"{"error_rate":0.1}"#, 422, "error_rate"),
        ("not json", 400, ""),
    ];

    for (body, expected, names) in cases {
        // Act
        let (status, answer) = app.put_faults(body).await;

        // Assert
        assert_eq!(status, expected, "{body}: {answer}");
        assert_eq!(answer["success"], false, "{body}: {answer}");
        assert!(answer["error"]["code"].is_string(), "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(names),
            "{body}: {message:?} lacks {names:?}"
        );
    }
    assert_faults(&get_faults(&app).await, 0.25, &[500], (0.0, "0s", "0s"));
}

/// The real binary: faults configured by environment are on from the start (and say so), a
/// change is logged with its new values, and an injected error's request line says it was one.
#[tokio::test]
async fn the_binary_starts_with_faults_from_settings_and_logs_each_change() {
    // Arrange
    let process = spawn_process(&[
        ("APP__FAULTS__ERROR_RATIO", "1"),
        ("APP__FAULTS__ERROR_STATUSES", "502,504"),
        ("APP__SHUTDOWN__DRAIN_DELAY", "0s"),
    ])
    .await;
    let client = reqwest::Client::new();

    // Act
    let faults: Value = client
        .get(process.admin_url("/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let info = client
        .get(process.url("/api/v1/info"))
        .send()
        .await
        .unwrap();
    let health = client
        .get(process.url("/api/v1/health"))
        .send()
        .await
        .unwrap();
    let put = client
        .put(process.admin_url("/faults"))
        .body(
            r#"{"error_ratio":0.5,"latency_ratio":0.1,"latency_min":"10ms","latency_max":"20ms"}"#,
        )
        .send()
        .await
        .unwrap();
    let deleted = client
        .delete(process.admin_url("/faults"))
        .send()
        .await
        .unwrap();
    process.signal(Signal::SIGTERM);
    let (exit, logs) = process.finish(Duration::from_secs(15)).await;

    // Assert
    assert_faults(&faults, 1.0, &[502, 504], (0.0, "0s", "0s"));
    assert!(
        [502, 504].contains(&info.status().as_u16()),
        "{}",
        info.status()
    );
    assert_eq!(health.status(), 200);
    assert_eq!(put.status(), 200, "no content-type needed");
    assert_eq!(deleted.status(), 200);
    assert!(exit.success());

    let json: Vec<Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let changes: Vec<&Value> = json
        .iter()
        .filter(|l| l["message"] == "faults changed")
        .collect();
    assert_eq!(changes.len(), 2, "one line per change: {logs:#?}");
    assert_eq!(changes[0]["level"], "INFO");
    assert_eq!(changes[0]["error_ratio"], 0.5, "{}", changes[0]);
    assert_eq!(changes[0]["latency_min"], "10ms", "{}", changes[0]);
    assert_eq!(changes[1]["error_ratio"], 0.0, "{}", changes[1]);
    assert!(
        json.iter()
            .any(|l| l["message"] == "fault injection is on" && l["error_ratio"] == 1.0),
        "a start with faults on says so: {logs:#?}"
    );
    let request_log = log_target("http");
    let faulted = json
        .iter()
        .find(|l| l["target"] == request_log.as_str() && l["span"]["route"] == "/api/v1/info")
        .unwrap_or_else(|| panic!("no request line for /info: {logs:#?}"));
    assert_eq!(faulted["level"], "WARN", "{faulted}");
    assert_eq!(faulted["span"]["fault"], "error", "{faulted}");
}
