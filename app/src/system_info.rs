//! The `/api/v1/info` snapshot: OS facts gathered by a background task and kept as ready-made
//! JSON, so the request path never calls sysinfo (a refresh costs ~130 µs of CPU).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use serde::Serialize;
use sysinfo::{MemoryRefreshKind, RefreshKind, System};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemInfo {
    /// OS type as Node's `os.type()` reports it.
    pub name: &'static str,
    pub release: String,
    pub total_mem: u64,
    /// Available memory, as Node's `os.freemem()` reports it (not sysinfo's "free").
    pub free_mem: u64,
    pub hostname: String,
    pub arch: String,
    pub cpus: usize,
    pub uptime: u64,
    pub version: &'static str,
}

/// Node's `os.type()` is `uname().sysname`; these are its values on the platforms Rust targets.
fn os_type() -> &'static str {
    match std::env::consts::OS {
        "linux" | "android" => "Linux",
        "macos" | "ios" => "Darwin",
        "windows" => "Windows_NT",
        "freebsd" => "FreeBSD",
        "openbsd" => "OpenBSD",
        "netbsd" => "NetBSD",
        other => other,
    }
}

fn collect(system: &mut System) -> SystemInfo {
    system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
    SystemInfo {
        name: os_type(),
        release: System::kernel_version().unwrap_or_default(),
        total_mem: system.total_memory(),
        free_mem: system.available_memory(),
        hostname: System::host_name().unwrap_or_default(),
        arch: System::cpu_arch(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        uptime: System::uptime().unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION"),
    }
}

/// The latest snapshot, serialized once per refresh and shared by every request.
#[derive(Clone)]
pub struct InfoSnapshot {
    body: Arc<ArcSwap<Bytes>>,
}

impl InfoSnapshot {
    /// Takes the first snapshot now and refreshes it every `interval` on the current runtime.
    pub fn start(interval: Duration) -> Result<Self, sysinfo::Error> {
        let mut system = System::new_with_specifics(RefreshKind::nothing())?;
        let snapshot = Self {
            body: Arc::new(ArcSwap::from_pointee(serialize(&collect(&mut system)))),
        };
        let body = Arc::clone(&snapshot.body);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate; we already have that snapshot
            loop {
                ticks.tick().await;
                body.store(Arc::new(serialize(&collect(&mut system))));
            }
        });
        Ok(snapshot)
    }

    /// The current snapshot as JSON bytes (a reference-count increment, no copy).
    pub fn body(&self) -> Bytes {
        Bytes::clone(&self.body.load())
    }
}

fn serialize(info: &SystemInfo) -> Bytes {
    Bytes::from(serde_json::to_vec(info).expect("SystemInfo serializes"))
}
