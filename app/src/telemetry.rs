//! Logging: one JSON object per line on stdout (or a human format), filtered by `log.level`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::settings::{LogFormat, LogSettings};

/// Installs the global subscriber. `log.level` was validated with the settings.
pub fn init(settings: &LogSettings) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&settings.level)?;
    let registry = tracing_subscriber::registry().with(filter);
    match settings.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()?,
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).try_init()?,
    }
    Ok(())
}
