//! Connections: accepted within a cap that fits the open-files limit, each counted by how it
//! ends, and closed at shutdown without dropping a request the server accepted.
//!
//! - **Open files.** Containers start with a soft `nofile` limit of 1024 (Docker ≥ 25,
//!   containerd 2) and, unlike Go's runtime, Rust's does not raise it, so `open_files_limit`
//!   raises the soft limit to the hard one. Each listener's cap leaves room for the other's and
//!   for the process's own files: `accept` never fails with EMFILE.
//! - **At the cap**, the oldest connection with no request in flight (an idle keep-alive, or a
//!   socket that never sent a complete head) is closed to admit the new one, as nginx reuses
//!   its idle connections; probes and scrapes get through 1,100 idle sockets. With every
//!   connection busy, the new one is closed at once: cheap, and counted.
//! - **At shutdown** a connection with a request in flight finishes it (its response says
//!   `Connection: close`); one without gets `HEAD_GRACE` to deliver a request, which is answered,
//!   and is closed after that. Connections the kernel completed before the listener closed are
//!   accepted and served too. A half-sent head no longer holds the exit for the shutdown timeout.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use http::{HeaderValue, header};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use metrics::{Counter, Gauge};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tower::Service;

/// Files kept free of connections: the listeners, epoll, the log, the trace exporter's sockets,
/// `/proc` reads for the process metrics and `/api/v1/info`.
const RESERVED_FILES: u64 = 64;

/// The metrics listener's cap: Prometheus, a person with curl, the admin `/faults` calls.
pub const METRICS_MAX_CONNECTIONS: usize = 32;

/// At shutdown, how long a connection with no request in flight may take to deliver one. A
/// client that connected just before the listener closed sends its request within
/// milliseconds; a socket that sends nothing, or half a head, is then closed.
const HEAD_GRACE: Duration = Duration::from_secs(1);

/// How long a new connection at the cap waits for the idle one closed for it.
const EVICTION_WAIT: Duration = Duration::from_millis(100);

/// Raises the soft open-files limit to the hard one and returns the soft limit in force.
pub fn open_files_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// The API listener's cap: `wanted` (`server.max_connections`), lowered to fit `open_files`
/// beside the metrics listener's cap and the reserved files.
pub fn api_cap(wanted: usize, open_files: u64) -> usize {
    let room = open_files.saturating_sub(RESERVED_FILES + METRICS_MAX_CONNECTIONS as u64);
    wanted
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// How a connection ended: the `reason` label of `http_connections_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closed {
    /// The client or the server closed it after complete exchanges.
    Done,
    /// The parser refused the request (NUL bytes, folded headers, not HTTP): hyper answered 400.
    BadRequest,
    /// The head exceeded `server.max_header_bytes` or hyper's 100 header lines: hyper answered 431.
    HeadTooLarge,
    /// No complete head within `server.header_read_timeout` (also the keep-alive idle timeout).
    HeaderTimeout,
    /// The client went away in the middle of a request or response.
    Incomplete,
    /// Any other error of the connection (a reset, a failed write).
    IoError,
    /// Closed while idle to admit a new connection at the cap.
    Evicted,
    /// Closed at shutdown with no request delivered within `HEAD_GRACE`.
    Shutdown,
}

impl Closed {
    const ALL: [Closed; 8] = [
        Closed::Done,
        Closed::BadRequest,
        Closed::HeadTooLarge,
        Closed::HeaderTimeout,
        Closed::Incomplete,
        Closed::IoError,
        Closed::Evicted,
        Closed::Shutdown,
    ];

    fn label(self) -> &'static str {
        match self {
            Closed::Done => "done",
            Closed::BadRequest => "bad_request",
            Closed::HeadTooLarge => "head_too_large",
            Closed::HeaderTimeout => "header_timeout",
            Closed::Incomplete => "incomplete",
            Closed::IoError => "io_error",
            Closed::Evicted => "evicted",
            Closed::Shutdown => "shutdown",
        }
    }

    fn of(result: Result<(), hyper::Error>) -> Self {
        match result {
            Ok(()) => Closed::Done,
            Err(e) if e.is_parse_too_large() => Closed::HeadTooLarge,
            Err(e) if e.is_parse() => Closed::BadRequest,
            Err(e) if e.is_timeout() => Closed::HeaderTimeout,
            Err(e) if e.is_incomplete_message() || e.is_body_write_aborted() => Closed::Incomplete,
            Err(_) => Closed::IoError,
        }
    }

    /// Closes a client caused that an operator should see (rate-limited, see `LogBudget`).
    fn worth_a_log_line(self) -> bool {
        matches!(
            self,
            Closed::BadRequest | Closed::HeadTooLarge | Closed::HeaderTimeout
        )
    }
}

/// Why a connection was not served at all: the `reason` label of
/// `http_connections_rejected_total`.
#[derive(Clone, Copy)]
enum Rejected {
    /// At the cap with every connection busy.
    Limit,
    /// `accept` failed (the process ran out of files despite the cap, or of memory).
    AcceptError,
}

/// The connection metrics of one listener; every series exists from the start at 0.
struct ConnectionMetrics {
    opened: Counter,
    active: Gauge,
    closed: [Counter; Closed::ALL.len()],
    rejected_limit: Counter,
    rejected_accept: Counter,
}

impl ConnectionMetrics {
    fn new(listener: &'static str, cap: usize) -> Self {
        metrics::describe_counter!(
            "http_connections_opened_total",
            "Connections accepted and served."
        );
        metrics::describe_gauge!("http_connections_active", "Connections open now.");
        metrics::describe_gauge!(
            "http_connections_limit",
            "The most connections served at once (server.max_connections, fitted to the open-files limit)."
        );
        metrics::describe_counter!(
            "http_connections_closed_total",
            "Connections closed, by reason (done, bad_request, head_too_large, header_timeout, incomplete, io_error, evicted, shutdown)."
        );
        metrics::describe_counter!(
            "http_connections_rejected_total",
            "Connections refused without serving them, by reason (limit, accept_error)."
        );
        metrics::gauge!("http_connections_limit", "listener" => listener).set(cap as f64);
        let rejected = |reason: &'static str| {
            let counter = metrics::counter!("http_connections_rejected_total", "listener" => listener, "reason" => reason);
            counter.increment(0);
            counter
        };
        let opened = metrics::counter!("http_connections_opened_total", "listener" => listener);
        opened.increment(0);
        Self {
            opened,
            active: metrics::gauge!("http_connections_active", "listener" => listener),
            closed: Closed::ALL.map(|reason| {
                let counter = metrics::counter!("http_connections_closed_total", "listener" => listener, "reason" => reason.label());
                counter.increment(0);
                counter
            }),
            rejected_limit: rejected("limit"),
            rejected_accept: rejected("accept_error"),
        }
    }

    fn closed(&self, reason: Closed) -> &Counter {
        let index = Closed::ALL.iter().position(|r| *r == reason);
        &self.closed[index.expect("every reason is in ALL")]
    }
}

/// At most one log line a second for an event a client can cause by the thousand; the metrics
/// count every one, and the line says how many it stands for.
#[derive(Default)]
struct LogBudget {
    last_second: AtomicU64,
    suppressed: AtomicU64,
}

impl LogBudget {
    /// `Some(n)`: log now, for this event and `n` suppressed since the last line.
    fn take(&self, started: Instant) -> Option<u64> {
        let second = started.elapsed().as_secs() + 1;
        let last = self.last_second.load(Ordering::Relaxed);
        if second != last
            && self
                .last_second
                .compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// One open connection, as the cap and the shutdown see it.
struct Tracked {
    id: u64,
    /// Requests handed to the router and not yet answered.
    in_flight: AtomicU64,
    /// Requests handed to the router so far.
    requests: AtomicU64,
    evict: Notify,
}

impl Tracked {
    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }
}

/// Counts a request in flight on its connection until dropped.
struct InFlight(Arc<Tracked>);

impl InFlight {
    fn start(tracked: &Arc<Tracked>) -> Self {
        tracked.requests.fetch_add(1, Ordering::AcqRel);
        tracked.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(tracked.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one listener's accept loop and connection tasks share.
struct Listener {
    name: &'static str,
    cap: usize,
    /// One per open connection, released once its socket is closed: the cap counts files.
    permits: Arc<Semaphore>,
    open: Mutex<BTreeMap<u64, Arc<Tracked>>>,
    next_id: AtomicU64,
    stopping: AtomicBool,
    metrics: ConnectionMetrics,
    started: Instant,
    logs: [LogBudget; Closed::ALL.len() + 2],
}

impl Listener {
    /// A place for a new connection: a free one, or the one the oldest idle connection leaves
    /// when it is closed for it. `None` when every connection is busy.
    async fn room(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Some(permit);
        }
        let evicted = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            // Ids grow with time: the first idle one is the oldest.
            let oldest_idle = open.values().find(|c| c.idle()).map(|c| c.id)?;
            open.remove(&oldest_idle).expect("found above")
        };
        evicted.evict.notify_one();
        if let Some(suppressed) = self.logs[Closed::ALL.len()].take(self.started) {
            tracing::warn!(
                listener = self.name,
                max_connections = self.cap,
                suppressed,
                "at the connection cap: closing idle connections to admit new ones"
            );
        }
        // Its task closes the socket, then frees the place; it keeps the connection if a request
        // started meanwhile, and the new one is refused.
        let freed = self.permits.clone().acquire_owned();
        match tokio::time::timeout(EVICTION_WAIT, freed).await {
            Ok(Ok(permit)) => Some(permit),
            _ => None,
        }
    }

    /// Registers a connection that has its place.
    fn admit(&self) -> Arc<Tracked> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let tracked = Arc::new(Tracked {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            evict: Notify::new(),
        });
        open.insert(tracked.id, tracked.clone());
        self.metrics.active.set(open.len() as f64);
        self.metrics.opened.increment(1);
        tracked
    }

    fn close(&self, tracked: &Tracked, reason: Closed, peer: SocketAddr) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.remove(&tracked.id);
        self.metrics.active.set(open.len() as f64);
        drop(open);
        self.metrics.closed(reason).increment(1);
        let index = Closed::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        if reason.worth_a_log_line()
            && let Some(suppressed) = self.logs[index].take(self.started)
        {
            tracing::info!(
                listener = self.name,
                reason = reason.label(),
                %peer,
                suppressed,
                "connection closed"
            );
        }
    }

    /// Puts back a connection chosen for eviction that started a request meanwhile.
    fn readmit(&self, tracked: &Arc<Tracked>) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.insert(tracked.id, tracked.clone());
        self.metrics.active.set(open.len() as f64);
    }

    fn reject(&self, reason: Rejected, error: Option<&std::io::Error>) {
        let (counter, budget) = match reason {
            Rejected::Limit => (&self.metrics.rejected_limit, Closed::ALL.len() + 1),
            Rejected::AcceptError => (&self.metrics.rejected_accept, Closed::ALL.len() + 1),
        };
        counter.increment(1);
        if let Some(suppressed) = self.logs[budget].take(self.started) {
            match error {
                Some(error) => {
                    tracing::warn!(listener = self.name, %error, suppressed, "accept failed")
                }
                None => tracing::warn!(
                    listener = self.name,
                    max_connections = self.cap,
                    suppressed,
                    "connection refused: every connection is busy"
                ),
            }
        }
    }
}

/// How one listener serves.
pub struct Serve {
    /// `api` or `metrics`: the `listener` label.
    pub name: &'static str,
    /// The most connections open at once.
    pub cap: usize,
    pub http: http1::Builder,
    /// After the stop, how long open connections may take to finish.
    pub limit: Duration,
}

impl Serve {
    /// Accepts connections until `stop` fires (its sender is dropped), then lets open ones
    /// finish within the limit. Returns whether every connection finished in time.
    /// Its metrics exist (at 0) when this returns, before the future is first polled.
    pub fn run(
        self,
        listener: TcpListener,
        router: Router,
        stop: watch::Receiver<()>,
    ) -> impl Future<Output = bool> {
        let shared = Arc::new(Listener {
            name: self.name,
            cap: self.cap,
            permits: Arc::new(Semaphore::new(self.cap)),
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            metrics: ConnectionMetrics::new(self.name, self.cap),
            started: Instant::now(),
            logs: Default::default(),
        });
        self.serve(listener, router, stop, shared)
    }

    async fn serve(
        self,
        listener: TcpListener,
        router: Router,
        stop: watch::Receiver<()>,
        shared: Arc<Listener>,
    ) -> bool {
        // Every connection task holds a sender; `recv` returns `None` once all have ended.
        let (done, mut all_done) = mpsc::channel::<()>(1);
        let serve = |stream: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit| {
            let tracked = shared.admit();
            let _ = stream.set_nodelay(true);
            let connection = self.http.serve_connection(
                TokioIo::new(stream),
                hyper_service(router.clone(), tracked.clone(), shared.clone()),
            );
            let task = connection_task(connection, tracked, shared.clone(), stop.clone(), peer);
            let done = done.clone();
            tokio::spawn(async move {
                task.await;
                // After the socket is closed: the place is free again.
                drop(permit);
                drop(done);
            });
        };

        let mut stopped = stop.clone();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.changed() => break,
            };
            match accepted {
                Ok((stream, peer)) => match shared.room().await {
                    Some(permit) => serve(stream, peer, permit),
                    // Closed unanswered: cheaper than any answer, and the client may retry.
                    None => shared.reject(Rejected::Limit, None),
                },
                Err(error) => {
                    shared.reject(Rejected::AcceptError, Some(&error));
                    // Out of files or memory: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        shared.stopping.store(true, Ordering::Release);
        // Connections the kernel completed before the close: their clients are sending requests.
        // Real accept(2) calls until EAGAIN: tokio's `poll_accept` may answer from a readiness
        // flag its reactor has not refreshed yet, and leave them to be reset by the close.
        if let Ok(listener) = listener.into_std() {
            while let Ok((stream, peer)) = listener.accept() {
                let stream = stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream));
                match (stream, shared.room().await) {
                    (Ok(stream), Some(permit)) => serve(stream, peer, permit),
                    _ => shared.reject(Rejected::Limit, None),
                }
            }
        }
        drop(done);
        tokio::time::timeout(self.limit, all_done.recv())
            .await
            .is_ok()
    }
}

/// Marks a request that breaks RFC 9112 §3.2: HTTP/1.1 with no `Host` header, or more than
/// one (hyper accepts both; HTTP/1.0 may leave it out). The API's layers answer it `400`, so it
/// is logged and counted like any request. Marked here, where requests come off the wire:
/// requests built in-process (router tests) may leave `Host` out, and a mark only on the rare
/// bad request costs the others nothing (a mark on every request was ~240 instructions each).
#[derive(Clone, Copy, Debug)]
pub struct BadHost;

fn one_host<B>(request: &http::Request<B>) -> bool {
    if request.version() != http::Version::HTTP_11 {
        return true;
    }
    let mut hosts = request.headers().get_all(header::HOST).iter();
    matches!((hosts.next(), hosts.next()), (Some(_), None))
}

/// The router as hyper calls it, counting the connection's requests in flight; once the
/// listener is stopping, each response asks the client to close the connection.
fn hyper_service(
    router: Router,
    tracked: Arc<Tracked>,
    listener: Arc<Listener>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        if !one_host(&request) {
            request.extensions_mut().insert(BadHost);
        }
        let in_flight = InFlight::start(&tracked);
        // Called without `poll_ready`: axum's `Router` is always ready (its `poll_ready` is
        // `Poll::Ready(Ok(()))`), and `oneshot` moved the request and the router into a state
        // machine of its own on every request.
        let routed = router.clone().call(request);
        let listener = listener.clone();
        async move {
            let mut response = routed.await?;
            // axum adds `Allow` to whatever answers a wrong method, so a POST with a body over
            // the limit got `413` with `allow:`; the header belongs to `405` only.
            if response.status() != http::StatusCode::METHOD_NOT_ALLOWED {
                response.headers_mut().remove(header::ALLOW);
            }
            if listener.stopping.load(Ordering::Acquire) {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            drop(in_flight);
            Ok(response)
        }
    })
}

/// Drives one connection to its end and records how it ended.
async fn connection_task(
    connection: impl Future<Output = Result<(), hyper::Error>>,
    tracked: Arc<Tracked>,
    listener: Arc<Listener>,
    mut stop: watch::Receiver<()>,
    peer: SocketAddr,
) {
    let mut connection = pin!(connection);
    // Once stopping: when to look again, and the requests seen at the last look.
    let mut grace: Option<(tokio::time::Instant, u64)> = None;
    let reason = loop {
        let deadline = grace.map_or_else(tokio::time::Instant::now, |(at, _)| at);
        tokio::select! {
            result = connection.as_mut() => break Closed::of(result),
            () = tracked.evict.notified() => {
                if tracked.idle() {
                    break Closed::Evicted;
                }
                listener.readmit(&tracked);
            }
            _ = stop.changed(), if grace.is_none() => {
                grace = Some((tokio::time::Instant::now() + HEAD_GRACE, tracked.requests()));
            }
            () = tokio::time::sleep_until(deadline), if grace.is_some() => {
                let seen = grace.map_or(0, |(_, seen)| seen);
                if tracked.idle() && tracked.requests() == seen {
                    break Closed::Shutdown;
                }
                // A request is being served: it ends with `Connection: close`; look again later.
                grace = Some((tokio::time::Instant::now() + HEAD_GRACE, tracked.requests()));
            }
        }
    };
    listener.close(&tracked, reason, peer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_cap_fits_the_open_files_limit() {
        assert_eq!(api_cap(10_000, 1_048_576), 10_000);
        assert_eq!(api_cap(10_000, 1024), 1024 - 64 - 32);
        assert_eq!(api_cap(10_000, 10), 1, "never zero");
    }

    #[test]
    fn the_log_budget_allows_one_line_a_second_and_counts_the_rest() {
        let budget = LogBudget::default();
        let started = Instant::now();
        assert_eq!(budget.take(started), Some(0));
        assert_eq!(budget.take(started), None);
        assert_eq!(budget.take(started), None);
        let a_second_ago = started - Duration::from_secs(1);
        assert_eq!(budget.take(a_second_ago), Some(2));
    }
}
