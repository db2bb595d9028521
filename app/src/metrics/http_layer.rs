//! The HTTP metrics: axum-prometheus's request lifecycle layer with callbacks that keep the
//! exporter's handles for each label set.
//!
//! axum-prometheus's stock callbacks (`Traffic`) build the label strings and three metric keys
//! on every request and ask the recorder for each, which copies the key and finds it in a
//! registry whose key equality sorts the labels; they also clone their path filters into every
//! request's future. That was ~10,800 instructions a request, 15% of the whole server's
//! user-space work. These callbacks emit the same names, labels and values (the integration
//! tests scrape them) and ask the recorder only for a label set they have not seen: ~2,000
//! instructions a request (docs/performance.md).
//!
//! Correct only because the exporter never drops a metric once registered: handles share their
//! storage with its registry for the life of the process, so a remembered handle is the one it
//! would return. `PrometheusBuilder::idle_timeout` would break that (an evicted metric's handle
//! would keep counting into storage nothing renders): do not set it without removing this cache.

use std::cell::{Cell, RefCell};
use std::hash::BuildHasher;
use std::sync::{PoisonError, RwLock};

use axum::body::Bytes;
use axum::extract::MatchedPath;
use axum_prometheus::lifecycle::layer::LifeCycleLayer;
use axum_prometheus::lifecycle::{Callbacks, OnBodyChunk};
use axum_prometheus::{
    AXUM_HTTP_REQUESTS_DURATION_SECONDS, AXUM_HTTP_REQUESTS_PENDING, AXUM_HTTP_REQUESTS_TOTAL,
};
use hashbrown::{DefaultHashBuilder, HashTable};
use http::{Method, Request, Response};
use metrics::{Counter, Gauge, Histogram};
// The exporter's own clock (it stamps every histogram sample with it): a TSC read, where
// `std::time::Instant` is a clock_gettime call.
use quanta::Instant;
use tower_http::classify::{ClassifiedResponse, ServerErrorsAsFailures, SharedClassifier};

use super::UNMATCHED;

/// The server errors whose `http_requests_total` series exist at 0 before their first error:
/// from the start for every endpoint the router lists (`create_series`), and from its first
/// request for any other (method, route) pair (HEAD, a 405's method). `rate()` needs an earlier
/// sample, so the first error of a series created by that error would never be counted (sparse
/// errors vanished after every restart). A panic is a 500, readiness while draining a 503, the
/// request timeout a 504.
const PRECREATED_STATUSES: [u16; 3] = [500, 503, 504];

/// `http_requests_total`, `http_request_duration_seconds` and `http_requests_pending`, labelled
/// by route template (or `unmatched`), method and, but for pending, status.
pub type HttpMetricLayer =
    LifeCycleLayer<SharedClassifier<ServerErrorsAsFailures>, HttpCallbacks, NoBodyHook>;

/// The layer for requests whose series live in `series`. The metrics go to the global recorder,
/// which must be installed first (`Metrics::install` does).
pub fn layer(series: &'static SeriesTable) -> HttpMetricLayer {
    LifeCycleLayer::new(
        // The classification is not used; this classifier answers at once and allocates nothing.
        SharedClassifier::new(ServerErrorsAsFailures::new()),
        HttpCallbacks { series },
        NoBodyHook,
    )
}

/// Creates the series of `method` on route `template` in `series` now, as its first request
/// would.
pub fn create_series(series: &'static SeriesTable, method: &Method, template: &str) {
    series.lookup(method_label(method), template);
}

#[derive(Clone, Copy)]
pub struct HttpCallbacks {
    series: &'static SeriesTable,
}

impl<FailureClass> Callbacks<FailureClass> for HttpCallbacks {
    type Data = InFlight;

    fn prepare<B>(&mut self, request: &Request<B>) -> InFlight {
        let start = Instant::now();
        let series = self.series.get(
            method_label(request.method()),
            request.extensions().get::<MatchedPath>(),
        );
        series.pending.increment(1.0);
        InFlight {
            series,
            start,
            ends_pending: Cell::new(true),
        }
    }

    fn on_response<B>(
        &mut self,
        response: &Response<B>,
        _: ClassifiedResponse<FailureClass, ()>,
        data: &mut InFlight,
    ) {
        let seconds = data.start.elapsed().as_secs_f64();
        data.series.record(response.status().as_u16(), seconds);
    }
}

/// One request's place in the metrics; dropping it ends the request's `pending`.
///
/// The lifecycle layer keeps it in the response future and, once the response is ready, clones
/// it into the response body and drops the future's copy (axum-prometheus 0.10,
/// `lifecycle/future.rs`); at the body's end, if the classifier waits for one, it clones it
/// again for `on_eos`. So a clone takes the duty over from its source: exactly one copy ends
/// `pending`, the one made last, and no request needs a reference-counted allocation. If a
/// clone outlived its source instead, `pending` would end early, never twice (the test below
/// checks the timing).
pub struct InFlight {
    series: &'static Series,
    start: Instant,
    ends_pending: Cell<bool>,
}

impl Clone for InFlight {
    fn clone(&self) -> Self {
        Self {
            series: self.series,
            start: self.start,
            ends_pending: Cell::new(self.ends_pending.replace(false)),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.ends_pending.get() {
            self.series.pending.decrement(1.0);
        }
    }
}

/// Response body sizes are not measured (`http_response_body_size` is not in the contract).
#[derive(Clone, Copy)]
pub struct NoBodyHook;

impl OnBodyChunk<Bytes> for NoBodyHook {
    type Data = InFlight;
}

/// The method label: the upper-case name, or `""` for a non-standard method, as axum-prometheus
/// labels it (a client cannot mint label values).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "",
    }
}

/// The handles of one (method, endpoint) pair. Leaked: like the exporter's own storage, a series
/// lives as long as the process, and requests then borrow it without reference counting.
struct Series {
    method: &'static str,
    endpoint: Box<str>,
    pending: Gauge,
    /// Per status code seen, a short list: a route answers with a handful of statuses.
    by_status: RwLock<Vec<(u16, Counter, Histogram)>>,
}

impl Series {
    fn new(method: &'static str, endpoint: &str) -> Self {
        let pending = metrics::gauge!(
            AXUM_HTTP_REQUESTS_PENDING,
            "method" => method,
            "endpoint" => endpoint.to_owned(),
        );
        // The exporter renders a counter from its registration on (`record` is later given the
        // same handle). Not for unmatched paths: their label is shared by every unknown path,
        // and no handler of ours runs for them.
        if endpoint != UNMATCHED {
            for status in PRECREATED_STATUSES {
                metrics::counter!(AXUM_HTTP_REQUESTS_TOTAL, &labels(method, status, endpoint))
                    .increment(0);
            }
        }
        Self {
            method,
            endpoint: endpoint.into(),
            pending,
            by_status: RwLock::default(),
        }
    }

    fn record(&self, status: u16, seconds: f64) {
        let seen = self
            .by_status
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, total, duration)) = seen.iter().find(|(code, ..)| *code == status) {
            total.increment(1);
            duration.record(seconds);
            return;
        }
        drop(seen);

        let labels = labels(self.method, status, &self.endpoint);
        let total = metrics::counter!(AXUM_HTTP_REQUESTS_TOTAL, &labels);
        let duration = metrics::histogram!(AXUM_HTTP_REQUESTS_DURATION_SECONDS, &labels);
        total.increment(1);
        duration.record(seconds);
        let mut seen = self
            .by_status
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Another request may have added the status meanwhile: the exporter gave both the same
        // handles, so one entry is enough.
        if !seen.iter().any(|(code, ..)| *code == status) {
            seen.push((status, total, duration));
        }
    }
}

/// The labels of one status's series, in the order axum-prometheus writes them; dashboards and
/// tests match on it.
fn labels(method: &'static str, status: u16, endpoint: &str) -> [(&'static str, String); 3] {
    [
        ("method", method.to_owned()),
        ("status", status.to_string()),
        ("endpoint", endpoint.to_owned()),
    ]
}

/// Every (method, endpoint) series seen. Its size needs no cap: methods are a fixed set, and
/// endpoints are the router's templates plus `unmatched`, never a raw path.
#[derive(Default)]
pub struct SeriesTable {
    /// foldhash, not SipHash: the keys are route templates and method names, which clients
    /// cannot choose, and SipHash was a quarter of the layer's cost.
    hasher: DefaultHashBuilder,
    // Read-mostly: after the first request of each pair every lookup is a hit.
    series: RwLock<HashTable<&'static Series>>,
}

/// Slots of `RECENT`: a service has a handful of routes.
const RECENT_SLOTS: usize = 8;

/// A series a thread found, and the template it found it by.
struct Recent {
    table: *const SeriesTable,
    /// A copy of the route's shared template: while it is held here, no other text can be
    /// allocated at its address, so the address alone identifies the template.
    template: MatchedPath,
    series: &'static Series,
}

thread_local! {
    /// The series this thread found last, by the address of their template: axum hands out
    /// each route's template as one shared string, so a request finds its series with three
    /// comparisons instead of hashing the template and locking the table (~300 instructions a
    /// request), or comparing its text (~100).
    static RECENT: RefCell<[Option<Recent>; RECENT_SLOTS]> =
        const { RefCell::new([const { None }; RECENT_SLOTS]) };
}

impl SeriesTable {
    /// The series of `method` on `template`, the route the request matched (`None`: unmatched).
    fn get(&self, method: &'static str, template: Option<&MatchedPath>) -> &'static Series {
        let Some(template) = template else {
            return self.lookup(method, UNMATCHED);
        };
        let address = template.as_str().as_ptr();
        let slot = (address as usize >> 4) % RECENT_SLOTS;
        RECENT.with_borrow_mut(|recent| match &recent[slot] {
            Some(found)
                if std::ptr::eq(found.table, self)
                    && std::ptr::eq(found.template.as_str().as_ptr(), address)
                    // Both from `method_label`'s literals.
                    && std::ptr::eq(found.series.method, method) =>
            {
                found.series
            }
            _ => {
                let series = self.lookup(method, template.as_str());
                recent[slot] = Some(Recent {
                    table: self,
                    template: template.clone(),
                    series,
                });
                series
            }
        })
    }

    fn lookup(&self, method: &'static str, endpoint: &str) -> &'static Series {
        // By route only: a route has a handful of methods, told apart by `matches`.
        let hash = self.hasher.hash_one(endpoint);
        let matches =
            |series: &&'static Series| series.method == method && &*series.endpoint == endpoint;
        let table = self.series.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = table.find(hash, matches) {
            return series;
        }
        drop(table);

        let mut table = self.series.write().unwrap_or_else(PoisonError::into_inner);
        let rehash = |series: &&'static Series| self.hasher.hash_one(&*series.endpoint);
        let entry = table
            .entry(hash, matches, rehash)
            .or_insert_with(|| Box::leak(Box::new(Series::new(method, endpoint))));
        entry.get()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use axum::Router;
    use axum::body::Body;
    use axum::extract::Path;
    use axum::routing::get;
    use http::StatusCode;
    use http_body_util::BodyExt;
    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
    use tokio::sync::oneshot;
    use tower::{Service, ServiceExt};

    use super::*;

    /// A router behind the layer, recording into a fresh table and exporter: the tests can run
    /// in one process without sharing series.
    fn instrumented() -> (Router, PrometheusHandle, PrometheusRecorder) {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let series: &'static SeriesTable = Box::leak(Box::default());
        let router = Router::new()
            .route(
                "/status/{code}",
                get(|Path(code): Path<u16>| async move { StatusCode::from_u16(code).unwrap() }),
            )
            .route("/held", get(held))
            .layer(layer(series));
        (router, handle, recorder)
    }

    /// Lets the one `/held` request in flight answer.
    static RELEASE: Mutex<Option<oneshot::Receiver<()>>> = Mutex::new(None);

    async fn held() -> &'static str {
        let release = RELEASE
            .lock()
            .unwrap()
            .take()
            .expect("one held request at a time");
        release.await.ok();
        "done"
    }

    /// Sends `method uri` through `router`, reads the whole body and returns the status.
    async fn send(router: &Router, method: &str, uri: &str) -> u16 {
        let request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        response.into_body().collect().await.unwrap();
        status
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Runs `test` on a current-thread runtime with `recorder` as this thread's recorder.
    fn with_recorder<R: metrics::Recorder>(recorder: &R, test: impl Future<Output = ()>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        metrics::with_local_recorder(recorder, || runtime.block_on(test));
    }

    #[test]
    fn routers_built_and_dropped_in_turn_keep_their_own_series() {
        // Each router's template is freed with it, and the next one's, of the same size, is
        // likely to be allocated at the same address: a series remembered by address alone
        // would count a later route's requests into an earlier route's series.
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let series: &'static SeriesTable = Box::leak(Box::default());
        let routes: Vec<String> = (10..40).map(|n| format!("/route{n}")).collect();
        with_recorder(&recorder, async {
            for route in &routes {
                let router = Router::new()
                    .route(route, get(|| async { "ok" }))
                    .layer(layer(series));
                assert_eq!(send(&router, "GET", route).await, 200);
            }
        });
        let text = handle.render();
        for route in &routes {
            let total =
                format!(r#"http_requests_total{{method="GET",status="200",endpoint="{route}"}}"#);
            assert_eq!(value(&text, &total), Some(1.0), "{total}\n{text}");
        }
    }

    #[test]
    fn each_table_keeps_its_own_series() {
        // Two layers on one router's routes share its templates, so the same address; each
        // table records into the recorder current when it first saw the route.
        let routes = Router::new().route("/shared", get(|| async { "ok" }));
        let tables: [&'static SeriesTable; 2] =
            [Box::leak(Box::default()), Box::leak(Box::default())];
        let recorders = [
            PrometheusBuilder::new().build_recorder(),
            PrometheusBuilder::new().build_recorder(),
        ];
        for (table, recorder) in tables.iter().zip(&recorders) {
            let router = routes.clone().layer(layer(table));
            with_recorder(recorder, async {
                assert_eq!(send(&router, "GET", "/shared").await, 200);
            });
        }
        let total = r#"http_requests_total{method="GET",status="200",endpoint="/shared"}"#;
        for recorder in &recorders {
            let text = recorder.handle().render();
            assert_eq!(value(&text, total), Some(1.0), "{text}");
        }
    }

    #[test]
    fn each_status_and_method_keeps_its_own_series() {
        let (router, handle, recorder) = instrumented();
        let requests = [
            ("GET", "/status/200", 200),
            ("GET", "/status/503", 503),
            ("GET", "/status/200", 200),
            ("POST", "/status/200", 405),
            ("BREW", "/status/200", 405),
            ("GET", "/no/such/path", 404),
        ];
        with_recorder(&recorder, async {
            // Repeated, so later rounds are answered from remembered handles.
            for _ in 0..3 {
                for (method, uri, status) in requests {
                    assert_eq!(send(&router, method, uri).await, status, "{method} {uri}");
                }
            }
        });
        let text = handle.render();
        for (method, status, endpoint, count) in [
            ("GET", 200, "/status/{code}", 6.0),
            ("GET", 503, "/status/{code}", 3.0),
            ("POST", 405, "/status/{code}", 3.0),
            ("", 405, "/status/{code}", 3.0),
            ("GET", 404, "unmatched", 3.0),
        ] {
            let labels = format!(r#"method="{method}",status="{status}",endpoint="{endpoint}""#);
            for name in ["http_requests_total", "http_request_duration_seconds_count"] {
                let series = format!("{name}{{{labels}}}");
                assert_eq!(value(&text, &series), Some(count), "{series}\n{text}");
            }
        }
        assert!(!text.contains("no/such"), "raw paths never become labels");

        // Each (method, route) pair seen has its 5xx series, at 0 until such an error; the
        // route's own 503s counted into the pre-created one.
        for (method, status) in [("GET", 500), ("GET", 504), ("POST", 500), ("", 503)] {
            let series = format!(
                r#"http_requests_total{{method="{method}",status="{status}",endpoint="/status/{{code}}"}}"#
            );
            assert_eq!(value(&text, &series), Some(0.0), "{series}\n{text}");
        }
        assert!(
            !text.contains(r#"status="500",endpoint="unmatched""#),
            "no 5xx series for unmatched paths\n{text}"
        );
    }

    #[test]
    fn pending_counts_a_request_until_its_body_is_done() {
        let (router, handle, recorder) = instrumented();
        let pending = r#"http_requests_pending{method="GET",endpoint="/held"}"#;
        with_recorder(&recorder, async {
            let (release, wait) = oneshot::channel();
            *RELEASE.lock().unwrap() = Some(wait);
            let mut service = router.clone().into_service::<Body>();
            let request = Request::get("/held").body(Body::empty()).unwrap();
            let request = service.ready().await.unwrap().call(request);
            let request = tokio::spawn(request);
            tokio::task::yield_now().await;
            assert_eq!(value(&handle.render(), pending), Some(1.0));

            release.send(()).unwrap();
            let response: Result<_, Infallible> = request.await.unwrap();
            let body = response.unwrap().into_body();
            // The response is ready but its body not yet read: still in flight.
            assert_eq!(value(&handle.render(), pending), Some(1.0));
            body.collect().await.unwrap();
            assert_eq!(value(&handle.render(), pending), Some(0.0));

            // Abandoned before it answers (a client gone): no longer pending either.
            let (_release, wait) = oneshot::channel::<()>();
            *RELEASE.lock().unwrap() = Some(wait);
            let router = router.clone();
            let abandoned = tokio::spawn(async move { send(&router, "GET", "/held").await });
            tokio::task::yield_now().await;
            assert_eq!(value(&handle.render(), pending), Some(1.0));
            abandoned.abort();
            assert!(abandoned.await.unwrap_err().is_cancelled());
            assert_eq!(value(&handle.render(), pending), Some(0.0));
        });
    }
}
