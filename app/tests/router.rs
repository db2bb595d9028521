//! Router-level behaviour, driven with `oneshot` (no sockets).

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use backend::faults::Faults;
use backend::layers::Layers;
use backend::routes::{self, AppState, Routes};
use backend::settings::Settings;
use backend::shutdown::Readiness;
use backend::startup::app;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The production state, through its one constructor, with `/api/v1/info` on or off.
fn state(info: bool) -> AppState {
    let mut settings = Settings::default();
    settings.info.enabled = info;
    AppState::new(&settings).expect("the state builds")
}

fn router_with(state: AppState, cors: &[&str]) -> Router {
    let mut settings = Settings::default();
    settings.cors.allowed_origins = cors.iter().map(|s| s.to_string()).collect();
    let readiness = state.readiness.clone();
    app(routes::router(state), readiness, &settings, None)
}

/// Extra routes under the full layer stack.
fn layered(routes: Router, settings: &Settings) -> Router {
    let faults = Faults::new(&settings.faults);
    Layers::new(Readiness::default(), settings, None, faults).around_router(routes)
}

async fn call(router: Router, request: Request<Body>) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let response = router.oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes().to_vec();
    (parts.status, parts.headers, bytes)
}

fn get_req(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON body")
}

fn assert_error_shape(bytes: &[u8], code: &str) {
    let body = json(bytes);
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn health_returns_the_original_body_as_json() {
    let (status, headers, body) =
        call(router_with(state(false), &[]), get_req("/api/v1/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(body, br#"{"success":true}"#);
    assert!(
        !headers.contains_key(header::CONNECTION),
        "keep-alive while ready"
    );
}

#[tokio::test]
async fn ready_turns_503_with_the_error_shape_once_draining() {
    let state = state(false);
    let readiness = state.readiness.clone();
    let router = router_with(state, &[]);

    let (status, _, _) = call(router.clone(), get_req("/api/v1/ready")).await;
    assert_eq!(status, StatusCode::OK);

    readiness.set_draining();
    let (status, _, body) = call(router.clone(), get_req("/api/v1/ready")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_error_shape(&body, "shutting_down");

    let (status, headers, _) = call(router, get_req("/api/v1/health")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "liveness does not depend on readiness"
    );
    assert_eq!(
        headers[header::CONNECTION],
        "close",
        "keep-alive clients are asked to leave while draining"
    );
}

#[tokio::test]
async fn info_reports_the_os_facts_with_node_names() {
    let (status, headers, body) =
        call(router_with(state(true), &[]), get_req("/api/v1/info")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let info = json(&body);
    assert_eq!(info["name"], "Linux");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["arch"], std::env::consts::ARCH);
    for field in ["release", "hostname"] {
        assert!(
            info[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field}: {info}"
        );
    }
    let total = info["totalMem"].as_u64().expect("totalMem");
    let free = info["freeMem"].as_u64().expect("freeMem");
    assert!(
        free > 0 && free <= total,
        "freeMem {free} within totalMem {total}"
    );
    assert!(info["cpus"].as_u64().is_some_and(|n| n >= 1));
    assert!(info["uptime"].as_u64().is_some_and(|n| n > 0));
}

#[tokio::test]
async fn free_mem_is_available_memory_like_node() {
    // Node's os.freemem() is MemAvailable, which counts reclaimable cache; MemFree does not.
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    let kib = |key: &str| -> u64 {
        let line = meminfo.lines().find(|l| l.starts_with(key)).expect(key);
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let (_, _, body) = call(router_with(state(true), &[]), get_req("/api/v1/info")).await;
    let free = json(&body)["freeMem"].as_u64().unwrap() as f64;
    let available = kib("MemAvailable:") as f64;
    assert!(
        (free - available).abs() / available < 0.10,
        "freeMem {free} should track MemAvailable {available}"
    );
}

#[tokio::test]
async fn info_is_404_when_disabled() {
    let (status, _, body) = call(router_with(state(false), &[]), get_req("/api/v1/info")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error_shape(&body, "not_found");
}

#[tokio::test]
async fn unknown_route_is_404_json() {
    let (status, headers, body) = call(router_with(state(false), &[]), get_req("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_error_shape(&body, "not_found");
}

#[tokio::test]
async fn wrong_method_is_405_json_with_allow() {
    let request = Request::delete("/api/v1/health")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = call(router_with(state(false), &[]), request).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers[header::ALLOW], "GET,HEAD");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_error_shape(&body, "method_not_allowed");
}

/// The layers wrap each route's handler and the fallbacks (`Layers`), not the router: every
/// kind of answer must still come through them, with a request id and a JSON error body.
#[tokio::test]
async fn every_answer_comes_through_the_layers_routed_or_not() {
    let head = Request::head("/api/v1/health").body(Body::empty()).unwrap();
    let (status, headers, body) = call(router_with(state(false), &[]), head).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    assert!(headers.contains_key("x-request-id"), "HEAD: {headers:?}");

    let (status, headers, _) = call(router_with(state(false), &[]), get_req("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(headers.contains_key("x-request-id"), "404: {headers:?}");

    let post = Request::post("/api/v1/health").body(Body::empty()).unwrap();
    let (status, headers, _) = call(router_with(state(false), &[]), post).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(headers.contains_key("x-request-id"), "405: {headers:?}");

    // Routes with no fallback of their own: axum's empty 404, inside the layers all the same.
    let routes = Routes::new().get("/only", || async { "ok" });
    let settings = Settings::default();
    let router = app(routes, Readiness::default(), &settings, None);
    let (status, headers, body) = call(router, get_req("/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        headers.contains_key("x-request-id"),
        "default 404: {headers:?}"
    );
    assert_error_shape(&body, "not_found");
}

#[tokio::test]
async fn oversized_body_is_413_json() {
    let request = Request::post("/api/v1/health")
        .header(header::CONTENT_LENGTH, 1_000_000)
        .body(Body::from(vec![b'x'; 1_000_000]))
        .unwrap();
    let (status, _, body) = call(router_with(state(false), &[]), request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error_shape(&body, "payload_too_large");
}

#[tokio::test]
async fn a_slow_handler_gets_504_json_after_the_request_timeout() {
    let mut settings = Settings::default();
    settings.server.request_timeout = Duration::from_millis(50);
    let slow = Router::new().route(
        "/slow",
        get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }),
    );
    let router = layered(slow, &settings);
    let (status, _, body) = call(router, get_req("/slow")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_error_shape(&body, "timeout");
}

#[tokio::test]
async fn a_panicking_handler_gets_500_json() {
    async fn boom() -> &'static str {
        panic!("boom")
    }
    let panics = Router::new().route("/boom", get(boom));
    let router = layered(panics, &Settings::default());
    let (status, _, body) = call(router, get_req("/boom")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_error_shape(&body, "internal");
}

#[tokio::test]
async fn request_id_is_generated_or_propagated() {
    let router = router_with(state(false), &[]);
    let (_, headers, _) = call(router.clone(), get_req("/api/v1/health")).await;
    let generated = headers["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");

    let request = Request::get("/api/v1/health")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = call(router, request).await;
    assert_eq!(headers["x-request-id"], "abc-123");
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let with_origin = |origin: &str| {
        Request::get("/api/v1/health")
            .header(header::ORIGIN, origin)
            .body(Body::empty())
            .unwrap()
    };
    let router = router_with(state(false), &["https://app.example.com"]);
    let (_, headers, _) = call(router.clone(), with_origin("https://app.example.com")).await;
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    let (_, headers, _) = call(router, with_origin("https://evil.example.com")).await;
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));

    let (_, headers, _) = call(
        router_with(state(false), &["*"]),
        with_origin("https://x.dev"),
    )
    .await;
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");

    let (_, headers, _) = call(router_with(state(false), &[]), with_origin("https://x.dev")).await;
    assert!(
        !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "off by default"
    );
}

#[tokio::test]
async fn cors_preflight_is_answered() {
    let router = router_with(state(false), &["https://app.example.com"]);
    let request = Request::options("/api/v1/info")
        .header(header::ORIGIN, "https://app.example.com")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = call(router, request).await;
    assert!(status.is_success(), "{status}");
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    assert!(
        headers[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .contains("GET")
    );
}

#[tokio::test]
async fn faults_from_the_settings_fail_api_routes_but_never_the_probes_or_unknown_paths() {
    // Arrange
    let mut settings = Settings::default();
    settings.faults.error_ratio = 1.0;
    settings.faults.error_statuses = vec![502];
    let state = AppState::new(&settings).expect("the state builds");
    let router = app(
        routes::router(state.clone()),
        state.readiness.clone(),
        &settings,
        None,
    );

    // Act
    let (info, _, body) = call(router.clone(), get_req("/api/v1/info")).await;
    let (health, _, _) = call(router.clone(), get_req("/api/v1/health")).await;
    let (ready, _, _) = call(router.clone(), get_req("/api/v1/ready")).await;
    let (unknown, _, unknown_body) = call(router, get_req("/nope")).await;

    // Assert
    assert_eq!(info, StatusCode::BAD_GATEWAY);
    assert_error_shape(&body, "injected_fault");
    assert_eq!((health, ready), (StatusCode::OK, StatusCode::OK));
    assert_eq!(unknown, StatusCode::NOT_FOUND);
    assert_error_shape(&unknown_body, "not_found");
}
