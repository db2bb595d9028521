//! The API routes. Handlers hold no logging, metrics or timing code: layers do that.

mod health;
mod info;
mod table;

use anyhow::Context;
use axum::body::Body;
use axum::extract::FromRef;
use axum::response::IntoResponse;
use http::{HeaderValue, header};

use crate::error::ApiError;
use crate::settings::Settings;
use crate::shutdown::Readiness;
use crate::system_info::InfoSnapshot;
pub use table::{Endpoint, Routes};

/// What the handlers share. Built only by `new`, in production and in tests alike, so a route
/// that needs state adds a field here and initializes it in `new`: one edit.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub readiness: Readiness,
    /// `None` when `info.enabled` is false: the route is then not mounted at all (404).
    pub info: Option<InfoSnapshot>,
}

impl AppState {
    /// A ready instance; starts the info snapshot task when the endpoint is enabled.
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let info = match settings.info.enabled {
            true => Some(
                InfoSnapshot::start(settings.info.refresh_interval)
                    .context("cannot read system information")?,
            ),
            false => None,
        };
        Ok(Self {
            readiness: Readiness::default(),
            info,
        })
    }
}

/// Every route of the API. Added through `Routes`, which records each (method, path) pair, so
/// the metrics can create each one's series at start.
pub fn router(state: AppState) -> Routes {
    let mut api = Routes::new()
        .get("/api/v1/health", health::health)
        .get("/api/v1/ready", health::ready);
    if let Some(snapshot) = state.info.clone() {
        api = api.merge(
            Routes::new()
                .get("/api/v1/info", info::info)
                .with_state(snapshot),
        );
    }
    api.fallback(not_found).with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NO_ROUTE
}

/// A `200` with a JSON body the handler already has as text or bytes. The body goes in as a
/// `Body`, which sets no `Content-Type` of its own: a `&str` or `Bytes` would set one that this
/// header then replaces, two header-map writes per request instead of one.
fn json(body: impl Into<Body>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.into(),
    )
}
