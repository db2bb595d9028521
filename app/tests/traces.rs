//! Traces, end to end: the real binary exports over OTLP/HTTP to a fake collector on 127.0.0.1,
//! continues the caller's `traceparent`, logs the trace id, and flushes on shutdown.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::{TestProcess, log_target, process_command, spawn_process};
use nix::sys::signal::Signal;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use tokio::io::{AsyncBufReadExt, BufReader};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

type Exports = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// An OTLP/HTTP receiver that keeps every decoded export.
async fn fake_collector() -> (SocketAddr, Exports) {
    async fn receive(State(exports): State<Exports>, body: Bytes) -> &'static str {
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
        exports.lock().unwrap().push(request);
        ""
    }
    let exports = Exports::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(exports.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, exports)
}

/// Every exported span as (trace id, parent span id, name, kind, service.name), hex-encoded.
fn spans(exports: &Exports) -> Vec<(String, String, String, SpanKind, String)> {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut spans = Vec::new();
    for export in exports.lock().unwrap().iter() {
        for resource_spans in &export.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.clone());
            let Some(Value::StringValue(service)) = service else {
                panic!("no service.name in {resource_spans:?}");
            };
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                spans.push((
                    hex(&span.trace_id),
                    hex(&span.parent_span_id),
                    span.name.clone(),
                    span.kind(),
                    service.clone(),
                ));
            }
        }
    }
    spans
}

/// An exported span's name, status code, attributes (key and value) and events' names.
struct Exported {
    name: String,
    status: StatusCode,
    attributes: Vec<(String, Option<Value>)>,
    events: Vec<String>,
}

fn exported(exports: &Exports) -> Vec<Exported> {
    let exports = exports.lock().unwrap();
    let spans = exports
        .iter()
        .flat_map(|export| &export.resource_spans)
        .flat_map(|resource_spans| &resource_spans.scope_spans)
        .flat_map(|scope_spans| &scope_spans.spans);
    spans
        .map(|span| Exported {
            name: span.name.clone(),
            status: span.status.as_ref().map_or(StatusCode::Unset, |s| s.code()),
            attributes: span
                .attributes
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value.as_ref().and_then(|v| v.value.clone()),
                    )
                })
                .collect(),
            events: span.events.iter().map(|e| e.name.clone()).collect(),
        })
        .collect()
}

/// The `span.trace_id` of each request log line, in order.
fn logged_trace_ids(logs: &[String]) -> Vec<Option<String>> {
    let request_log = log_target("http");
    logs.iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|json| json["target"] == request_log.as_str())
        .map(|json| json["span"]["trace_id"].as_str().map(str::to_owned))
        .collect()
}

/// The span field names of each request log line, in order (sorted within a line).
fn logged_span_keys(logs: &[String]) -> Vec<Vec<String>> {
    let request_log = log_target("http");
    logs.iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|json| json["target"] == request_log.as_str())
        .map(|json| {
            json["span"]
                .as_object()
                .into_iter()
                .flat_map(|o| o.keys().cloned())
                .collect()
        })
        .collect()
}

/// The value of the span attribute `http.response.status_code`.
fn response_status(span: &Exported) -> Option<Value> {
    let code = span
        .attributes
        .iter()
        .find(|(k, _)| k == "http.response.status_code");
    code.and_then(|(_, v)| v.clone())
}

async fn get(process: &TestProcess, traceparent: Option<&str>) {
    let mut request = reqwest::Client::new().get(process.url("/api/v1/health"));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.expect("request");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn traces_continue_the_callers_trace_reach_the_collector_and_carry_the_log_line() {
    // Arrange: export to the fake collector; the default 5 s batch delay is left alone, so only
    // the flush at shutdown can deliver the spans in time.
    let (collector, exports) = fake_collector().await;
    let endpoint = format!("http://{collector}");
    // `/api/v1/info` is held past the request timeout, for a 504 (the probes are never held).
    let process = spawn_process(&[
        ("APP__TRACING__OTLP_ENDPOINT", &endpoint),
        ("APP__SHUTDOWN__DRAIN_DELAY", "0s"),
        ("APP__SERVER__REQUEST_TIMEOUT", "100ms"),
        ("APP__FAULTS__LATENCY_RATIO", "1"),
        ("APP__FAULTS__LATENCY_MIN", "1s"),
        ("APP__FAULTS__LATENCY_MAX", "1s"),
    ])
    .await;

    // Act: a sampled caller, a caller that decided not to sample, and no caller at all.
    get(&process, Some(&format!("00-{TRACE_ID}-{PARENT_ID}-01"))).await;
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    get(
        &process,
        Some(&format!("00-{unsampled}-b7ad6b7169203331-00")),
    )
    .await;
    get(&process, None).await;
    let timed_out = reqwest::get(process.url("/api/v1/info")).await.unwrap();
    assert_eq!(timed_out.status(), 504);
    process.signal(Signal::SIGTERM);
    let (status, logs) = process.finish(Duration::from_secs(15)).await;

    // Assert: each request line has the span fields it has with traces off, plus the trace id;
    // not the `otel.*` fields that only name the exported span.
    let keys = logged_span_keys(&logs);
    assert_eq!(keys.len(), 4, "four request lines in {logs:#?}");
    for keys in &keys[..3] {
        let expected = ["method", "name", "path", "request_id", "route", "trace_id"];
        assert_eq!(keys, &expected, "in {logs:#?}");
    }

    // Assert: the log lines carry the trace ids, a fresh one for the request without a caller.
    assert!(status.success(), "exit status {status}");
    let ids = logged_trace_ids(&logs);
    assert_eq!(ids.len(), 4, "four request lines in {logs:#?}");
    assert_eq!(ids[0].as_deref(), Some(TRACE_ID));
    assert_eq!(ids[1].as_deref(), Some(unsampled));
    let fresh = ids[2].clone().expect("a trace id without traceparent");
    assert!(
        fresh.len() == 32 && fresh != "0".repeat(32) && fresh != TRACE_ID,
        "fresh trace id {fresh}"
    );

    // Assert: the collector got the sampled server spans, children of their callers, and not the
    // one its caller chose not to sample.
    let spans = spans(&exports);
    let name = "GET /api/v1/health".to_owned();
    let server = SpanKind::Server;
    // The default service.name is the package's name.
    let service = env!("CARGO_PKG_NAME").to_owned();
    assert!(
        spans.contains(&(
            TRACE_ID.into(),
            PARENT_ID.into(),
            name.clone(),
            server,
            service.clone()
        )),
        "the caller's trace in {spans:#?}"
    );
    assert!(
        spans.contains(&(fresh, String::new(), name, server, service)),
        "a root span for the request without traceparent in {spans:#?}"
    );
    assert!(
        spans.iter().all(|span| span.0 != unsampled),
        "unsampled trace exported: {spans:#?}"
    );

    // Assert: spans carry the request's fields and their response's status, as an integer
    // (OpenTelemetry's HTTP conventions; a status exported as the text "200" would not compare),
    // and a 5xx marks its span as an error. The request's log line is not a span event: its
    // fields are the span's, and an event was built, converted and encoded at every export.
    let exported = exported(&exports);
    let health: Vec<_> = exported
        .iter()
        .filter(|s| s.name == "GET /api/v1/health")
        .collect();
    assert_eq!(health.len(), 2, "two sampled /health spans");
    for span in &health {
        assert_eq!(response_status(span), Some(Value::IntValue(200)));
        assert_eq!(span.status, StatusCode::Unset);
    }
    let info: Vec<_> = exported
        .iter()
        .filter(|s| s.name == "GET /api/v1/info")
        .collect();
    let [info] = info.as_slice() else {
        panic!(
            "one /info span in {:?}",
            exported.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    };
    assert_eq!(response_status(info), Some(Value::IntValue(504)));
    assert_eq!(info.status, StatusCode::Error);
    assert!(
        exported.iter().all(|s| s.events.is_empty()),
        "span events exported"
    );
    let span_keys: Vec<&String> = exported
        .iter()
        .flat_map(|s| &s.attributes)
        .map(|(k, _)| k)
        .collect();
    for key in ["route", "path", "request_id"] {
        assert!(
            span_keys.iter().any(|k| *k == key),
            "no {key} in {span_keys:?}"
        );
    }
    // Without the trace id, source location, target and thread attributes that were a fifth of
    // the trace path's cost. The log line's `trace_id` is the span's own trace id: as an
    // attribute it would repeat it.
    let noise = |k: &str| k.starts_with("code.") || k.starts_with("thread.");
    assert!(
        !span_keys
            .iter()
            .any(|k| noise(k) || *k == "target" || *k == "trace_id"),
        "location, target, thread or trace_id attributes in {span_keys:?}"
    );
}

/// The text format keeps no JSON fields to write the request's line from, so the line goes
/// through tracing as an event, and the exported span carries it (docs/observability.md). The
/// status attribute is there either way.
#[tokio::test]
async fn with_the_text_log_format_the_request_line_is_also_a_span_event() {
    // Arrange: the text format (the readiness helpers read JSON, so its address is parsed here).
    let (collector, exports) = fake_collector().await;
    let endpoint = format!("http://{collector}");
    let mut child = process_command(&[
        ("APP__LOG__FORMAT", "text"),
        ("APP__TRACING__OTLP_ENDPOINT", &endpoint),
        ("APP__SHUTDOWN__DRAIN_DELAY", "0s"),
    ])
    .spawn()
    .expect("start the binary");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut logs = Vec::new();
    let api = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the listening line within 10 s")
            .expect("readable")
            .expect("a line before exit");
        let address = line.split(' ').find_map(|word| word.strip_prefix("api="));
        if let Some(address) = address.filter(|_| line.contains("listening")) {
            break address.to_owned();
        }
        logs.push(line);
    };

    // Act: one request, then a clean stop (which flushes the spans).
    let response = reqwest::get(format!("http://{api}/api/v1/health")).await;
    assert_eq!(response.expect("request").status(), 200);
    let pid = nix::unistd::Pid::from_raw(child.id().expect("running") as i32);
    nix::sys::signal::kill(pid, Signal::SIGTERM).expect("signal");
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
    assert!(status.expect("exit in time").expect("wait").success());
    while let Ok(Some(line)) = lines.next_line().await {
        logs.push(line);
    }

    // Assert: a text line for the request, and one span carrying it as its only event.
    let request_log = log_target("http");
    assert!(
        logs.iter()
            .any(|l| l.contains(&request_log) && l.contains("request completed")),
        "no request line in {logs:#?}"
    );
    let exported = exported(&exports);
    let [span] = exported.as_slice() else {
        panic!("one span, got {}", exported.len())
    };
    assert_eq!(span.name, "GET /api/v1/health");
    assert_eq!(span.events, ["request completed"]);
    assert_eq!(response_status(span), Some(Value::IntValue(200)));
}

#[tokio::test]
async fn with_traces_off_a_traceparent_is_ignored_and_no_trace_id_is_logged() {
    let process = spawn_process(&[("APP__SHUTDOWN__DRAIN_DELAY", "0s")]).await;

    get(&process, Some(&format!("00-{TRACE_ID}-{PARENT_ID}-01"))).await;
    process.signal(Signal::SIGTERM);
    let (status, logs) = process.finish(Duration::from_secs(15)).await;

    assert!(status.success(), "exit status {status}");
    assert_eq!(logged_trace_ids(&logs), vec![None], "in {logs:#?}");
}

#[tokio::test]
async fn a_collector_that_never_answers_delays_exit_by_a_bounded_time_only() {
    // Arrange: a collector that accepts connections and never responds.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let process = spawn_process(&[
        ("APP__TRACING__OTLP_ENDPOINT", &endpoint),
        ("APP__SHUTDOWN__DRAIN_DELAY", "0s"),
    ])
    .await;

    // Act
    get(&process, None).await;
    let stopping = std::time::Instant::now();
    process.signal(Signal::SIGTERM);
    let (status, _) = process.finish(Duration::from_secs(15)).await;

    // Assert: the flush gives up after its export timeout (3 s) and the exit is still clean.
    assert!(status.success(), "exit status {status}");
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "exit took {:?}",
        stopping.elapsed()
    );
}
