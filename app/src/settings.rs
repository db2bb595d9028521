//! Settings: built-in defaults → optional TOML file → `PORT` → `APP__SECTION__KEY` environment.
//!
//! Everything is checked before a port is bound; every failure names the key and the value.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

const ENV_PREFIX: &str = "APP";
const ENV_SEPARATOR: &str = "__";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub metrics: MetricsSettings,
    pub info: InfoSettings,
    pub log: LogSettings,
    pub cors: CorsSettings,
    pub shutdown: ShutdownSettings,
    pub tracing: TracingSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub host: IpAddr,
    pub port: u16,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub body_limit_bytes: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 4000,
            request_timeout: Duration::from_secs(10),
            // Also hyper's keep-alive idle timeout: it must outlive the load balancer's (60 s).
            header_read_timeout: Duration::from_secs(65),
            max_header_bytes: 16 * 1024,
            body_limit_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    pub host: IpAddr,
    pub port: u16,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 9464,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfoSettings {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

impl Default for InfoSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            refresh_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsSettings {
    /// Exact origins (`https://app.example.com`), or `*` for any. Empty: no CORS headers at all.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSettings {
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            drain_delay: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingSettings {
    /// Base URL of an OTLP/HTTP receiver (spans go to `<base>/v1/traces`); empty turns
    /// trace export, and `traceparent` propagation, off.
    pub otlp_endpoint: String,
    /// Share of new traces kept; a request with a `traceparent` follows its caller's decision.
    pub sample_ratio: f64,
    /// The `service.name` resource attribute traces are filed under.
    pub service_name: String,
}

impl Default for TracingSettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            sample_ratio: 1.0,
            service_name: env!("CARGO_PKG_NAME").into(),
        }
    }
}

impl TracingSettings {
    pub fn enabled(&self) -> bool {
        !self.otlp_endpoint.is_empty()
    }

    /// Where spans are posted, the same way OTEL_EXPORTER_OTLP_ENDPOINT is resolved.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.otlp_endpoint.trim_end_matches('/'))
    }

    fn validate(&self) -> Result<(), SettingsError> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(SettingsError::invalid(
                "tracing.sample_ratio",
                self.sample_ratio,
                "must be between 0 and 1",
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err(SettingsError::invalid(
                "tracing.service_name",
                &self.service_name,
                "must not be empty",
            ));
        }
        if !self.enabled() {
            return Ok(());
        }
        let invalid = |reason: &str| {
            Err(SettingsError::invalid(
                "tracing.otlp_endpoint",
                &self.otlp_endpoint,
                reason,
            ))
        };
        let Ok(uri) = self.otlp_endpoint.parse::<http::Uri>() else {
            return invalid("not a URL");
        };
        // The exporter's HTTP client is built without TLS (no C code in the static binary):
        // send to a collector on the node or in the cluster, which forwards over TLS.
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return invalid("must be an http://host[:port] URL (TLS: see docs/observability.md)");
        }
        if uri.path().trim_end_matches('/').ends_with("/v1/traces") {
            return invalid("give the base URL: /v1/traces is appended");
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid setting {key} = {value:?}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    #[error("unknown setting {var} (no key {key}); known keys: {known}")]
    UnknownKey {
        var: String,
        key: String,
        known: String,
    },
    #[error("invalid settings: {0}")]
    Load(#[from] config::ConfigError),
}

impl SettingsError {
    fn invalid(key: &str, value: impl ToString, reason: impl ToString) -> Self {
        Self::Invalid {
            key: key.into(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl Settings {
    /// Loads from the process environment and the optional file.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, std::env::vars().collect())
    }

    /// Loads from the given environment map (tests pass their own, production the process's).
    pub fn load_from(
        file: Option<&Path>,
        env: HashMap<String, String>,
    ) -> Result<Self, SettingsError> {
        reject_unknown_env_keys(&env)?;

        // The built-in defaults are the `Default` impls, applied by `#[serde(default)]`.
        let mut builder = Config::builder();
        if let Some(path) = file {
            let path_str = path.to_string_lossy();
            if !path.is_file() {
                return Err(SettingsError::invalid(
                    "config file",
                    path_str,
                    "no such file",
                ));
            }
            builder = builder.add_source(File::new(&path_str, FileFormat::Toml));
        }
        // `PORT` sets the API port, as platforms (and the original service) expect; APP__ wins.
        if let Some(port) = env.get("PORT") {
            let port = parse_port("PORT", port)?;
            builder = builder.add_source(Config::try_from(&PortOverride::new(port))?);
        }
        let config = builder
            .add_source(
                Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator(ENV_SEPARATOR)
                    .separator(ENV_SEPARATOR)
                    .list_separator(",")
                    .with_list_parse_key("cors.allowed_origins")
                    .try_parsing(true)
                    .source(Some(env.clone())),
            )
            .build()?;
        let settings: Settings = config
            .clone()
            .try_deserialize()
            .map_err(|e| explain(e, &config, &env))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let s = &self.server;
        if s.max_header_bytes < 8192 {
            return Err(SettingsError::invalid(
                "server.max_header_bytes",
                s.max_header_bytes,
                "must be at least 8192",
            ));
        }
        if s.body_limit_bytes == 0 {
            return Err(SettingsError::invalid(
                "server.body_limit_bytes",
                0,
                "must be positive",
            ));
        }
        positive("server.request_timeout", s.request_timeout)?;
        positive("server.header_read_timeout", s.header_read_timeout)?;
        positive("shutdown.timeout", self.shutdown.timeout)?;
        if self.info.refresh_interval < Duration::from_millis(100) {
            return Err(SettingsError::invalid(
                "info.refresh_interval",
                humantime_serde::re::humantime::format_duration(self.info.refresh_interval),
                "must be at least 100ms",
            ));
        }
        if s.port != 0 && s.port == self.metrics.port {
            return Err(SettingsError::invalid(
                "metrics.port",
                self.metrics.port,
                "must differ from server.port: /metrics is never served on the API port",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(SettingsError::invalid("log.level", &self.log.level, e));
        }
        self.cors.validate()?;
        self.tracing.validate()
    }
}

impl CorsSettings {
    /// The configured origins without blanks (an empty env var yields one empty entry).
    pub fn origins(&self) -> impl Iterator<Item = &str> {
        self.allowed_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
    }

    pub fn allows_any(&self) -> bool {
        self.origins().any(|o| o == "*")
    }

    fn validate(&self) -> Result<(), SettingsError> {
        const KEY: &str = "cors.allowed_origins";
        let origins: Vec<&str> = self.origins().collect();
        if self.allows_any() && origins.len() > 1 {
            return Err(SettingsError::invalid(
                KEY,
                origins.join(","),
                "`*` must stand alone",
            ));
        }
        for origin in origins.iter().filter(|o| **o != "*") {
            let scheme_ok = origin.starts_with("http://") || origin.starts_with("https://");
            if !scheme_ok || origin.ends_with('/') || http::HeaderValue::from_str(origin).is_err() {
                return Err(SettingsError::invalid(
                    KEY,
                    origin,
                    "an origin is scheme://host[:port], e.g. https://app.example.com",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct PortOverride {
    server: PortOnly,
}

#[derive(Serialize)]
struct PortOnly {
    port: u16,
}

impl PortOverride {
    fn new(port: u16) -> Self {
        Self {
            server: PortOnly { port },
        }
    }
}

fn parse_port(key: &str, value: &str) -> Result<u16, SettingsError> {
    value
        .trim()
        .parse()
        .map_err(|_| SettingsError::invalid(key, value, "expected a port number 0-65535"))
}

fn positive(key: &str, value: Duration) -> Result<(), SettingsError> {
    if value.is_zero() {
        return Err(SettingsError::invalid(
            key,
            "0s",
            "must be longer than zero",
        ));
    }
    Ok(())
}

/// Every leaf key the settings have, as `section.key`, derived from the defaults.
fn known_keys() -> BTreeSet<String> {
    let defaults = serde_json::to_value(Settings::default()).expect("settings serialize");
    let mut keys = BTreeSet::new();
    if let serde_json::Value::Object(sections) = defaults {
        for (section, fields) in sections {
            if let serde_json::Value::Object(fields) = fields {
                keys.extend(fields.keys().map(|k| format!("{section}.{k}")));
            }
        }
    }
    keys
}

fn env_var_for(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{ENV_SEPARATOR}{}",
        key.replace('.', ENV_SEPARATOR).to_uppercase()
    )
}

/// A typo in an `APP__` variable must not be silently ignored.
fn reject_unknown_env_keys(env: &HashMap<String, String>) -> Result<(), SettingsError> {
    let known = known_keys();
    let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
    let mut vars: Vec<&String> = env.keys().filter(|k| k.starts_with(&prefix)).collect();
    vars.sort();
    for var in vars {
        let key = var[prefix.len()..]
            .to_lowercase()
            .replace(ENV_SEPARATOR, ".");
        if !known.contains(&key) {
            let known = known.iter().map(|k| env_var_for(k)).collect::<Vec<_>>();
            return Err(SettingsError::UnknownKey {
                var: var.clone(),
                key,
                known: known.join(", "),
            });
        }
    }
    Ok(())
}

/// Rewrites a deserialization error so it names the key, where it came from, and its value.
fn explain(
    error: config::ConfigError,
    config: &Config,
    env: &HashMap<String, String>,
) -> SettingsError {
    use config::ConfigError::{At, Type};
    let (key, reason) = match &error {
        Type {
            key: Some(key),
            expected,
            ..
        } => (key, format!("expected {expected}")),
        At {
            key: Some(key),
            error,
            ..
        } => (key, error.to_string()),
        _ => return SettingsError::Load(error),
    };
    let var = env_var_for(key);
    let value = match env.get(&var) {
        Some(value) => value.clone(),
        None => config
            .get::<config::Value>(key)
            .map_or_else(|_| "?".into(), |v| v.to_string()),
    };
    let key = match env.contains_key(&var) {
        true => format!("{key} ({var})"),
        false => key.clone(),
    };
    SettingsError::Invalid { key, value, reason }
}
