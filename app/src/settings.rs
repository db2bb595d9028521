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
    pub faults: FaultSettings,
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
    /// The most API connections open at once; lowered at start to fit the open-files limit.
    pub max_connections: usize,
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
            max_connections: 10_000,
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
    #[serde(deserialize_with = "strict_bool")]
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

/// Injected faults for game days and alert drills: a share of API requests answered with a
/// server error, a share delayed. All off by default; `/faults` on the metrics listener changes
/// them at runtime (`crate::faults`), with the same JSON shape and the same checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSettings {
    /// Share (0-1) of API requests answered with one of `error_statuses`.
    pub error_ratio: f64,
    /// The statuses an injected error picks from, evenly: 5xx only, so it counts as an error.
    #[serde(deserialize_with = "statuses")]
    pub error_statuses: Vec<u16>,
    /// Share (0-1) of API requests delayed, before their handler runs, by a duration drawn
    /// evenly from `latency_min..=latency_max`.
    pub latency_ratio: f64,
    #[serde(with = "humantime_serde")]
    pub latency_min: Duration,
    #[serde(with = "humantime_serde")]
    pub latency_max: Duration,
}

impl FaultSettings {
    /// The longest delay that can be injected: a game day needs seconds, not hours, and a held
    /// request holds a connection.
    pub const MAX_LATENCY: Duration = Duration::from_secs(60);

    /// Whether any fault can be injected at all.
    pub fn active(&self) -> bool {
        self.error_ratio > 0.0 || self.latency_ratio > 0.0
    }

    /// The checks of the settings and of `PUT /faults`; the error names the key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (key, ratio) in [
            ("faults.error_ratio", self.error_ratio),
            ("faults.latency_ratio", self.latency_ratio),
        ] {
            if !(0.0..=1.0).contains(&ratio) {
                return Err(SettingsError::invalid(
                    key,
                    ratio,
                    "must be between 0 and 1",
                ));
            }
        }
        const STATUSES: &str = "faults.error_statuses";
        let listed = || {
            let codes: Vec<String> = self.error_statuses.iter().map(u16::to_string).collect();
            codes.join(",")
        };
        if self.error_statuses.is_empty() {
            return Err(SettingsError::invalid(
                STATUSES,
                "",
                "must list at least one status",
            ));
        }
        if let Some(bad) = self
            .error_statuses
            .iter()
            .find(|s| !(500..=599).contains(*s))
        {
            return Err(SettingsError::invalid(
                STATUSES,
                listed(),
                format!("{bad} is not a server error (500-599): only those count as errors"),
            ));
        }
        if self.error_statuses.len() > 16 {
            return Err(SettingsError::invalid(
                STATUSES,
                listed(),
                "at most 16 statuses",
            ));
        }
        let format = humantime_serde::re::humantime::format_duration;
        if self.latency_max > Self::MAX_LATENCY {
            return Err(SettingsError::invalid(
                "faults.latency_max",
                format(self.latency_max),
                format!("must be at most {}", format(Self::MAX_LATENCY)),
            ));
        }
        if self.latency_min > self.latency_max {
            return Err(SettingsError::invalid(
                "faults.latency_min",
                format(self.latency_min),
                format!(
                    "must not exceed faults.latency_max ({})",
                    format(self.latency_max)
                ),
            ));
        }
        Ok(())
    }
}

/// `true` or `false` only. The config crate turns any number into a bool (`2` was taken as
/// true); here a number or another word is refused, naming the key.
fn strict_bool<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    use serde::de::{self, Unexpected, Visitor};

    struct Flag;

    impl Visitor<'_> for Flag {
        type Value = bool;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("true or false")
        }

        fn visit_bool<E: de::Error>(self, value: bool) -> Result<bool, E> {
            Ok(value)
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<bool, E> {
            match value {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(E::invalid_value(Unexpected::Str(value), &self)),
            }
        }
    }

    deserializer.deserialize_any(Flag)
}

/// A list of statuses from TOML or JSON (`[500, 503]`), or from the environment: there
/// `500,503` arrives as a list of strings, and a single `500` as a number.
fn statuses<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<u16>, D::Error> {
    use serde::de::{self, SeqAccess, Unexpected, Visitor};

    struct Statuses;
    const EXPECTED: &str = "HTTP statuses, e.g. [500, 503] or \"500,503\"";

    fn status<E: de::Error>(text: &str) -> Result<u16, E> {
        text.trim()
            .parse()
            .map_err(|_| E::invalid_value(Unexpected::Str(text), &"a status such as 503"))
    }

    impl<'de> Visitor<'de> for Statuses {
        type Value = Vec<u16>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(EXPECTED)
        }

        fn visit_u64<E: de::Error>(self, code: u64) -> Result<Vec<u16>, E> {
            let code = u16::try_from(code)
                .map_err(|_| E::invalid_value(Unexpected::Unsigned(code), &self))?;
            Ok(vec![code])
        }

        fn visit_i64<E: de::Error>(self, code: i64) -> Result<Vec<u16>, E> {
            let code = u64::try_from(code)
                .map_err(|_| E::invalid_value(Unexpected::Signed(code), &self))?;
            self.visit_u64(code)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<u16>, E> {
            text.split(',').map(status).collect()
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u16>, A::Error> {
            let mut codes = Vec::new();
            while let Some(more) = seq.next_element_seed(Statuses)? {
                codes.extend(more);
            }
            Ok(codes)
        }
    }

    impl<'de> de::DeserializeSeed<'de> for Statuses {
        type Value = Vec<u16>;

        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<u16>, D::Error> {
            d.deserialize_any(self)
        }
    }

    deserializer.deserialize_any(Statuses)
}

impl Default for FaultSettings {
    fn default() -> Self {
        Self {
            error_ratio: 0.0,
            error_statuses: vec![500],
            latency_ratio: 0.0,
            latency_min: Duration::ZERO,
            latency_max: Duration::ZERO,
        }
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
            // Read here, not by the config crate: it wants a regular file, and said "not found"
            // of `/dev/null` (an empty document) and of a directory alike.
            let text = std::fs::read_to_string(path)
                .map_err(|error| SettingsError::invalid("config file", &path_str, error))?;
            let toml = File::from_str(&text, FileFormat::Toml);
            builder = builder.add_source(toml);
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
                    .with_list_parse_key("faults.error_statuses")
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
        if !(1..=1_000_000).contains(&s.max_connections) {
            return Err(SettingsError::invalid(
                "server.max_connections",
                s.max_connections,
                "must be between 1 and 1000000",
            ));
        }
        if s.body_limit_bytes == 0 {
            return Err(SettingsError::invalid(
                "server.body_limit_bytes",
                0,
                "must be positive",
            ));
        }
        for (key, value, (least, most)) in [
            ("server.request_timeout", s.request_timeout, TIMEOUT),
            ("server.header_read_timeout", s.header_read_timeout, TIMEOUT),
            ("info.refresh_interval", self.info.refresh_interval, REFRESH),
            ("shutdown.drain_delay", self.shutdown.drain_delay, DRAIN),
            ("shutdown.timeout", self.shutdown.timeout, SHUTDOWN),
        ] {
            within(key, value, least, most)?;
        }
        if s.port != 0 && s.port == self.metrics.port {
            return Err(SettingsError::invalid(
                "metrics.port",
                self.metrics.port,
                "must differ from server.port: /metrics is never served on the API port",
            ));
        }
        validate_log_filter(&self.log.level)?;
        self.cors.validate()?;
        self.tracing.validate()?;
        self.faults.validate()
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

const MILLI: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);
const TEN_MINUTES: Duration = Duration::from_secs(600);
/// `server.request_timeout` and `server.header_read_timeout`: an hour is far beyond any request
/// or idle keep-alive connection this service should hold.
const TIMEOUT: (Duration, Duration) = (MILLI, HOUR);
/// `info.refresh_interval`: more often than every 100ms costs CPU for nothing.
const REFRESH: (Duration, Duration) = (Duration::from_millis(100), HOUR);
/// `shutdown.drain_delay` and `shutdown.timeout`: an orchestrator's grace period must cover both,
/// and an instance that needs more than 20 minutes to stop is stuck, not draining.
const DRAIN: (Duration, Duration) = (Duration::ZERO, TEN_MINUTES);
const SHUTDOWN: (Duration, Duration) = (MILLI, TEN_MINUTES);

/// Every duration setting has a bound: hyper's header timer and tokio's sleeps add a duration
/// to the clock, and a huge one overflows it (a panic on every connection), or a count of
/// milliseconds that no longer fits a log field.
fn within(
    key: &str,
    value: Duration,
    least: Duration,
    most: Duration,
) -> Result<(), SettingsError> {
    if (least..=most).contains(&value) {
        return Ok(());
    }
    let format = humantime_serde::re::humantime::format_duration;
    let reason = match least.is_zero() {
        true => format!("must be at most {}", format(most)),
        false => format!("must be between {} and {}", format(least), format(most)),
    };
    Err(SettingsError::invalid(key, format(value), reason))
}

/// The levels a filter may name, in any case (tracing's numbers `0`-`5` are refused: unreadable).
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

fn is_level(word: &str) -> bool {
    LEVELS.iter().any(|level| level.eq_ignore_ascii_case(word))
}

/// `log.level` is a tracing filter: comma-separated directives, each a level (`info`) or
/// `selector=level` (`hyper=warn`, `crate::module[span{field=value}]=debug`). tracing also takes
/// a bare word as a *target* with every level on (`warning` means "only the target `warning`"),
/// which silences every other line: a typo of a level gave a service with no logs at all. Such
/// a directive, and an empty filter, are refused.
fn validate_log_filter(filter: &str) -> Result<(), SettingsError> {
    let invalid = |reason: String| Err(SettingsError::invalid("log.level", filter, reason));
    let levels = LEVELS.join(", ");
    let mut directives = filter.split(',').filter(|d| !d.is_empty()).peekable();
    if directives.peek().is_none() {
        return invalid(format!("must name a level ({levels}) or target=level"));
    }
    for directive in directives {
        let usable = match directive.rsplit_once('=') {
            Some((selector, level)) => !selector.is_empty() && is_level(level),
            None => is_level(directive),
        };
        if !usable {
            return invalid(format!(
                "`{directive}` is neither a level ({levels}) nor target=level"
            ));
        }
    }
    match tracing_subscriber::EnvFilter::try_new(filter) {
        Ok(_) => Ok(()),
        Err(error) => invalid(error.to_string()),
    }
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
    // An element of a list (`faults.error_statuses[1]`) came from the list's variable.
    let var = env_var_for(key.split('[').next().unwrap_or(key));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: Option<&Path>, env: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load_from(file, env.collect())
    }

    #[test]
    fn faults_are_off_by_default() {
        let faults = load(None, &[]).unwrap().faults;
        assert_eq!(faults, FaultSettings::default());
        assert!(!faults.active());
        assert_eq!(faults.error_statuses, [500]);
    }

    #[test]
    fn error_statuses_read_as_one_or_many_from_the_environment_and_a_file() {
        for (value, expected) in [("503", vec![503]), ("502, 504", vec![502, 504])] {
            let env = [("APP__FAULTS__ERROR_STATUSES", value)];
            assert_eq!(load(None, &env).unwrap().faults.error_statuses, expected);
        }
        let file = std::env::temp_dir().join(format!("faults-{}.toml", std::process::id()));
        std::fs::write(
            &file,
            "[faults]\nerror_ratio = 0.5\nerror_statuses = [500, 503]\nlatency_max = \"250ms\"\n",
        )
        .unwrap();
        let loaded = load(Some(&file), &[]);
        std::fs::remove_file(&file).unwrap();
        let faults = loaded.unwrap().faults;
        assert_eq!(faults.error_statuses, [500, 503]);
        assert_eq!(faults.error_ratio, 0.5);
        assert_eq!(faults.latency_max, Duration::from_millis(250));
    }

    #[test]
    fn bad_faults_are_refused_naming_the_key() {
        for (var, value, key) in [
            ("APP__FAULTS__ERROR_RATIO", "1.5", "faults.error_ratio"),
            ("APP__FAULTS__ERROR_RATIO", "NaN", "faults.error_ratio"),
            ("APP__FAULTS__LATENCY_RATIO", "2", "faults.latency_ratio"),
            (
                "APP__FAULTS__ERROR_STATUSES",
                "404",
                "faults.error_statuses",
            ),
            (
                "APP__FAULTS__ERROR_STATUSES",
                "200",
                "faults.error_statuses",
            ),
            (
                "APP__FAULTS__ERROR_STATUSES",
                "500,600",
                "faults.error_statuses",
            ),
            (
                "APP__FAULTS__ERROR_STATUSES",
                "70000",
                "faults.error_statuses",
            ),
            ("APP__FAULTS__LATENCY_MIN", "1s", "faults.latency_min"),
            ("APP__FAULTS__LATENCY_MAX", "61s", "faults.latency_max"),
        ] {
            let error = load(None, &[(var, value)]).unwrap_err().to_string();
            assert!(error.contains(key), "{var}={value}: {error}");
        }
        let min_above_max = [
            ("APP__FAULTS__LATENCY_MIN", "300ms"),
            ("APP__FAULTS__LATENCY_MAX", "200ms"),
        ];
        let error = load(None, &min_above_max).unwrap_err().to_string();
        assert!(error.contains("faults.latency_min"), "{error}");
        assert!(load(None, &[("APP__FAULTS__LATENCY_MAX", "60s")]).is_ok());
    }

    #[test]
    fn a_log_filter_is_levels_and_target_level_directives_only() {
        let startup = format!("warn,{}::startup=info", env!("CARGO_CRATE_NAME"));
        let span = format!(
            "info,{}[request{{route=/x}}]=debug",
            env!("CARGO_CRATE_NAME")
        );
        for good in [
            "info",
            "OFF",
            "Debug,hyper=warn",
            "info,",
            &startup,
            &span,
            "[request]=trace",
        ] {
            load(None, &[("APP__LOG__LEVEL", good)]).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "",
            ",",
            "warning",
            "3",
            "info,inf",
            "hyper=",
            "=info",
            "hyper=loud",
            "a[b]",
        ] {
            let error = load(None, &[("APP__LOG__LEVEL", bad)])
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("log.level") && error.contains(&format!("{bad:?}")),
                "{error}"
            );
        }
    }

    #[test]
    fn every_duration_is_bounded_and_its_bounds_are_accepted() {
        for (var, refused, accepted) in [
            ("APP__SERVER__REQUEST_TIMEOUT", ["0s", "61m"], ["1ms", "1h"]),
            (
                "APP__SERVER__HEADER_READ_TIMEOUT",
                ["0s", "2h"],
                ["1ms", "1h"],
            ),
            (
                "APP__INFO__REFRESH_INTERVAL",
                ["99ms", "1h 1s"],
                ["100ms", "1h"],
            ),
            (
                "APP__SHUTDOWN__DRAIN_DELAY",
                ["10m 1ms", "500000000000y"],
                ["0s", "10m"],
            ),
            ("APP__SHUTDOWN__TIMEOUT", ["0s", "11m"], ["1ms", "10m"]),
        ] {
            let key = var[5..].replace("__", ".").to_lowercase();
            for value in refused {
                let error = load(None, &[(var, value)]).unwrap_err().to_string();
                assert!(error.contains(&key), "{var}={value}: {error}");
            }
            for value in accepted {
                assert!(load(None, &[(var, value)]).is_ok(), "{var}={value}");
            }
        }
    }
}
