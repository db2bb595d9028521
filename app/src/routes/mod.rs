//! The API routes. Handlers hold no logging, metrics or timing code: layers do that.

mod health;
mod info;

use anyhow::Context;
use axum::Router;
use axum::extract::FromRef;
use axum::routing::get;

use crate::error::ApiError;
use crate::settings::Settings;
use crate::shutdown::Readiness;
use crate::system_info::InfoSnapshot;

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

pub fn router(state: AppState) -> Router {
    let mut api = Router::new()
        .route("/api/v1/health", get(health::health))
        .route("/api/v1/ready", get(health::ready));
    if let Some(snapshot) = state.info.clone() {
        api = api.route("/api/v1/info", get(info::info).with_state(snapshot));
    }
    api.fallback(not_found).with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NO_ROUTE
}
