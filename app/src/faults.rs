//! Fault injection for game days and alert drills: a share of API requests answered with a
//! server error, a share delayed before their handler runs. Off by default (`faults` settings);
//! switched at runtime with `GET`/`PUT`/`DELETE /faults` on the metrics listener, which is never
//! public. docs/contract.md, "Faults".
//!
//! The layer sits innermost, inside the metrics layer and the request timeout: an injected error
//! counts in `http_requests_total` like a real one, and injected latency is cut by the timeout
//! (`504`) like a slow handler. The probes are never faulted: a drill must not restart pods or
//! take them out of the load balancer. Each injected fault counts in `faults_injected_total`
//! and marks its request's log line (`fault`); each change of the faults is logged once.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{Request, StatusCode};
use tower::{Layer, Service};
use tracing::Level;

use crate::error::ApiError;
use crate::extract::Json;
use crate::settings::{FaultSettings, SettingsError};
use crate::telemetry;

/// Counts every injected fault, by `kind` (`error` or `latency`) and `endpoint` (the route
/// template: bounded, like the HTTP metrics' label).
pub const FAULTS_INJECTED_TOTAL: &str = "faults_injected_total";

/// The probes (docs/contract.md, "Endpoints"): never faulted, whatever the ratios.
pub const NEVER_FAULTED: [&str; 2] = ["/api/v1/health", "/api/v1/ready"];

/// The faults in force, shared by the layer (which reads them on every request, without a lock)
/// and `/faults` (which replaces them).
#[derive(Clone)]
pub struct Faults(Arc<ArcSwap<FaultSettings>>);

impl Faults {
    /// Faults as configured; `settings` were validated with the other settings.
    pub fn new(settings: &FaultSettings) -> Self {
        metrics::describe_counter!(
            FAULTS_INJECTED_TOTAL,
            "Faults injected on purpose (GET /faults on the metrics port), by kind and endpoint."
        );
        if settings.active() {
            log(settings, Level::WARN, "fault injection is on");
        }
        Self(Arc::new(ArcSwap::from_pointee(settings.clone())))
    }

    pub fn current(&self) -> FaultSettings {
        FaultSettings::clone(&self.0.load())
    }

    /// Replaces the faults after the checks the settings get; logs the new values.
    pub fn set(&self, faults: FaultSettings) -> Result<FaultSettings, SettingsError> {
        faults.validate()?;
        self.0.store(Arc::new(faults.clone()));
        log(&faults, Level::INFO, "faults changed");
        Ok(faults)
    }

    /// The layer that applies them to the API routes.
    pub fn layer(&self) -> FaultLayer {
        FaultLayer {
            faults: self.clone(),
        }
    }

    /// `GET`, `PUT` and `DELETE /faults`, for the metrics listener only.
    pub fn router(self) -> Router {
        Router::new()
            .route("/faults", get(show).put(replace).delete(clear))
            .with_state(self)
    }
}

/// One line with every value: a start with faults on is a warning, a change is news.
fn log(faults: &FaultSettings, level: Level, message: &str) {
    let format = humantime_serde::re::humantime::format_duration;
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                $level,
                error_ratio = faults.error_ratio,
                error_statuses = ?faults.error_statuses,
                latency_ratio = faults.latency_ratio,
                latency_min = %format(faults.latency_min),
                latency_max = %format(faults.latency_max),
                "{message}"
            )
        };
    }
    match level {
        Level::WARN => line!(Level::WARN),
        _ => line!(Level::INFO),
    }
}

/// `GET /faults`: the faults in force, in the shape `PUT` takes.
async fn show(State(faults): State<Faults>) -> Json<FaultSettings> {
    Json(faults.current())
}

/// `PUT /faults`: replaces every fault; a field left out takes its default (off). Any content
/// type, so `curl --data '{"error_ratio":0.1}'` works as typed.
async fn replace(
    State(faults): State<Faults>,
    body: Bytes,
) -> Result<Json<FaultSettings>, ApiError> {
    let axum::Json(wanted) = axum::Json::<FaultSettings>::from_bytes(&body)?;
    faults
        .set(wanted)
        .map(Json)
        .map_err(|error| ApiError::rejected(StatusCode::UNPROCESSABLE_ENTITY, error.to_string()))
}

/// `DELETE /faults`: every fault off.
async fn clear(State(faults): State<Faults>) -> Result<Json<FaultSettings>, ApiError> {
    faults
        .set(FaultSettings::default())
        .map(Json)
        .map_err(|_| ApiError::Internal)
}

/// Marks an injected error response, so its log line is a warning, not an error of the service.
#[derive(Clone, Copy, Debug)]
pub struct InjectedError;

#[derive(Clone)]
pub struct FaultLayer {
    faults: Faults,
}

impl<S> Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> FaultService<S> {
        FaultService {
            inner,
            faults: self.faults.clone(),
        }
    }
}

#[derive(Clone)]
pub struct FaultService<S> {
    inner: S,
    faults: Faults,
}

/// What one request gets: a delay before its handler, an error instead of it, or both.
#[derive(Clone, Copy)]
struct Fault {
    delay: Option<Duration>,
    error: Option<StatusCode>,
}

impl<S> FaultService<S> {
    /// Draws this request's fault, if the faults are on and its route may be faulted.
    fn draw<B>(&self, request: &Request<B>) -> Option<Fault> {
        let faults = self.faults.0.load();
        if !faults.active() {
            return None;
        }
        // Unmatched paths (no handler of ours runs) and the probes are left alone.
        let route = request.extensions().get::<MatchedPath>()?.as_str();
        if NEVER_FAULTED.contains(&route) {
            return None;
        }
        let delay = (uniform() < faults.latency_ratio).then(|| {
            let spread = faults.latency_max.saturating_sub(faults.latency_min);
            faults.latency_min + spread.mul_f64(uniform())
        });
        let error = (uniform() < faults.error_ratio).then(|| {
            let statuses = &faults.error_statuses;
            let pick = (uniform() * statuses.len() as f64) as usize;
            let code = statuses.get(pick).or(statuses.first()).copied();
            StatusCode::from_u16(code.unwrap_or(500)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        if delay.is_none() && error.is_none() {
            return None;
        }
        // Counted and marked when drawn: a delayed request cut by the timeout still counts.
        let count = |kind: &'static str| {
            metrics::counter!(FAULTS_INJECTED_TOTAL, "kind" => kind, "endpoint" => route.to_owned())
                .increment(1);
        };
        if let Some(delay) = delay {
            count("latency");
            telemetry::record("fault_delay_ms", delay.as_millis() as u64);
        }
        if error.is_some() {
            count("error");
        }
        let kind = match (delay, error) {
            (Some(_), Some(_)) => "latency+error",
            (Some(_), None) => "latency",
            _ => "error",
        };
        telemetry::record("fault", kind);
        Some(Fault { delay, error })
    }
}

impl<S, B> Service<Request<B>> for FaultService<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = FaultFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> FaultFuture {
        let Some(Fault { delay, error }) = self.draw(&request) else {
            // Boxed here, innermost, so that every layer above moves a pointer, not the
            // route's future, which carries the whole request until it is first polled: each
            // layer moves its inner future into its own (~400 instructions a request,
            // docs/performance.md, for one allocation).
            return Box::pin(self.inner.call(request));
        };
        // The instance polled ready goes along; a fresh clone stays for the next call. The
        // route is not called before the delay is over.
        let fresh = self.inner.clone();
        let mut route = std::mem::replace(&mut self.inner, fresh);
        Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            match error {
                None => route.call(request).await,
                Some(status) => {
                    let mut response = ApiError::InjectedFault(status).into_response();
                    response.extensions_mut().insert(InjectedError);
                    Ok(response)
                }
            }
        })
    }
}

type FaultFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// A uniform draw from [0, 1): xorshift64* with one state per thread, seeded from std's
/// per-thread random keys. No lock and no syscall per request; not for secrets.
fn uniform() -> f64 {
    thread_local! {
        static STATE: Cell<u64> =
            Cell::new(RandomState::new().hash_one(std::thread::current().id()) | 1);
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        // The top 53 bits, as a double's mantissa holds them.
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_uniform_in_the_unit_interval() {
        let draws: Vec<f64> = (0..100_000).map(|_| uniform()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        // Each tenth holds about a tenth of the draws.
        for decile in 0..10 {
            let share = draws
                .iter()
                .filter(|d| (**d * 10.0) as usize == decile)
                .count() as f64
                / draws.len() as f64;
            assert!((share - 0.1).abs() < 0.01, "decile {decile}: {share}");
        }
    }

    #[test]
    fn each_thread_draws_its_own_sequence() {
        let here: Vec<f64> = (0..4).map(|_| uniform()).collect();
        let there = std::thread::spawn(|| (0..4).map(|_| uniform()).collect::<Vec<f64>>())
            .join()
            .unwrap();
        assert_ne!(here, there);
    }
}
