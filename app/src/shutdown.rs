//! Shutdown: a signal flips readiness to 503 at once, then the server drains (see `startup`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the instance should receive new traffic; shared by `/ready` and the shutdown path.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Default for Readiness {
    fn default() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub fn set_draining(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Marks the `503` that `/api/v1/ready` answers while draining, so the request log does not
/// report an intended answer as a failure.
#[derive(Clone, Copy, Debug)]
pub struct Draining;

/// Resolves on the first SIGTERM (orchestrators), SIGINT (Ctrl-C) or SIGHUP. The handlers are
/// installed when this is called, not when it is first polled, so call it before binding: a
/// signal that arrives during start-up must start a graceful shutdown, not kill the process.
///
/// SIGHUP's default action is to terminate at once, failing every request in flight; it comes
/// from a closed terminal or session, or from an operator or supervisor that expects a reload.
/// There is nothing to reload (settings are read once), so it drains like SIGTERM, and the
/// restart that follows reads the new settings.
pub fn signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        let mut hup = signal(SignalKind::hangup()).expect("install SIGHUP handler");
        async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => "SIGHUP",
            };
            tracing::info!(signal = name, "shutdown signal received");
        }
    }
    #[cfg(not(unix))]
    async {
        tokio::signal::ctrl_c()
            .await
            .expect("install Ctrl-C handler");
        tracing::info!(signal = "ctrl-c", "shutdown signal received");
    }
}
