//! A production template backend: a small JSON API with readiness, metrics and graceful shutdown.
//!
//! Where things live: `settings` (config), `telemetry` (logs), `metrics`, `routes`, `error`,
//! `shutdown`, `startup` (listeners, layers, serving), `system_info` (the /info snapshot) and
//! `healthcheck` (the image's HEALTHCHECK client).

pub mod error;
pub mod healthcheck;
pub mod metrics;
pub mod routes;
pub mod settings;
pub mod shutdown;
pub mod startup;
pub mod system_info;
pub mod telemetry;
