//! A production template service: a small JSON API with readiness, metrics and graceful shutdown.
//!
//! Where things live: `settings` (config), `telemetry` (logs), `request_log` (a request's id,
//! span and log line), `metrics`, `routes`, `error`, `extract` (extractors that reject with
//! `error`), `shutdown`, `startup` (listeners, serving), `layers` (what every request meets), `timeout` (the request timeout),
//! `connections` (the cap, connection metrics, closing at shutdown), `system_info` (the /info
//! snapshot), `faults` (fault injection, off by default), `healthcheck` (the image's
//! HEALTHCHECK client) and `alloc` (the global allocator).

pub mod alloc;
pub mod body;
pub mod catch_panic;
pub mod connections;
pub mod error;
pub mod extract;
pub mod faults;
pub mod healthcheck;
pub mod layers;
pub mod metrics;
pub mod request_log;
pub mod routes;
pub mod settings;
pub mod shutdown;
pub mod startup;
pub mod system_info;
pub mod telemetry;
pub mod timeout;
