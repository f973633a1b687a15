//! Configuration: one TOML file, read into a raw, serde-typed form (unknown keys rejected) and
//! resolved into a validated [`Config`] that the rest of the program uses. Every default needs
//! no AWS account: local sample logs, an embedded store under `state_dir`, and a rule group
//! written to a file.
//!
//! Errors name the file, the key and what is wrong, so `revokd check-config` (and the
//! `ExecStartPre=` line of the systemd unit) can tell an operator exactly what to fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::analysis::{DetectionQuery, ParamValue};

/// The built-in defaults, also shipped as `revokd.example.toml` for operators to copy.
pub const DEFAULT_LOGS_URL: &str = "samples/logs";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: key `{key}`: {message}")]
    Invalid { origin: String, key: String, message: String },
}

/// Where a configuration came from, for error messages.
fn origin_of(path: Option<&Path>) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None => "built-in defaults".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw form: exactly what the file says.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<PathBuf>,
    mode: Option<Mode>,
    #[serde(default)]
    logs: RawLogs,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    detection: RawDetection,
    #[serde(default)]
    revocation: RawRevocation,
    #[serde(default)]
    safety: RawSafety,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    enforcer: RawEnforcer,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogs {
    url: Option<String>,
    #[serde(default)]
    distribution_ids: Vec<String>,
    region: Option<String>,
    endpoint: Option<String>,
    allow_http: Option<bool>,
    max_request_duration: Option<String>,
    max_delivery_delay: Option<String>,
    max_concurrent_fetches: Option<usize>,
    max_retries: Option<usize>,
    cache: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    cron: Option<String>,
    lookback: Option<String>,
    run_on_start: Option<bool>,
    max_run_duration: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDetection {
    query: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRevocation {
    ttl: Option<String>,
    manual_ttl: Option<String>,
    unrevoke_cooldown: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSafety {
    #[serde(default)]
    allow_sessions: Vec<String>,
    #[serde(default)]
    allow_ips: Vec<String>,
    max_new_revocations_per_run: Option<usize>,
    max_new_revocation_share: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    backend: Option<StoreBackend>,
    #[serde(default)]
    embedded: RawEmbedded,
    #[serde(default)]
    dynamodb: RawDynamo,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmbedded {
    path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDynamo {
    table: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnforcer {
    backend: Option<EnforcerBackend>,
    #[serde(default)]
    file: RawFileEnforcer,
    #[serde(default)]
    wafv2: RawWaf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileEnforcer {
    path: Option<PathBuf>,
    capacity: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWaf {
    name: Option<String>,
    id: Option<String>,
    scope: Option<WafScope>,
    region: Option<String>,
    endpoint: Option<String>,
    reserved_capacity: Option<u32>,
    max_update_attempts: Option<u32>,
}

// ---------------------------------------------------------------------------------------------
// Validated form.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Analyse, record and enforce.
    Enforce,
    /// Analyse and log everything, write nothing to the store or the rule group.
    Observe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Embedded,
    Dynamodb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnforcerBackend {
    File,
    Wafv2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WafScope {
    Cloudfront,
    Regional,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from; `None` for the built-in defaults.
    pub path: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub mode: Mode,
    pub logs: LogsConfig,
    pub schedule: ScheduleConfig,
    pub detection: DetectionConfig,
    pub revocation: RevocationPolicy,
    pub safety: SafetyConfig,
    pub store: StoreConfig,
    pub enforcer: EnforcerConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLocation {
    /// A local directory (absolute).
    Local(PathBuf),
    /// An S3 (or S3-compatible) bucket and a key prefix (a folder, no trailing `/`).
    S3 { bucket: String, prefix: String },
}

#[derive(Debug, Clone)]
pub struct LogsConfig {
    pub location: LogLocation,
    /// Distribution ids whose files to read; empty = every file under the prefix.
    pub distribution_ids: Vec<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub allow_http: bool,
    /// CloudFront files are named by the hour a request *started* but stamp each line with
    /// the time it *finished*: a file can hold lines up to this long after its hour.
    pub max_request_duration: Duration,
    /// CloudFront delivers a log file usually within an hour of its requests, sometimes up to
    /// a day later. A run of the present reaches back this far for the requests of objects
    /// delivered since the last successful run; older ones are counted and analysed by no run.
    pub max_delivery_delay: Duration,
    pub max_concurrent_fetches: usize,
    /// Retries of a failed S3 request (5xx, throttling, timeouts, dropped connections), with
    /// exponential backoff, within three minutes of the first attempt.
    pub max_retries: usize,
    /// Keep each parsed object as Parquet under `state_dir/cache`, so it is parsed only once.
    pub cache: bool,
}

#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub cron: String,
    pub lookback: Duration,
    pub run_on_start: bool,
    /// A daemon's run going on longer than this is taken for hung: the daemon exits for the
    /// service manager to start it again (the timer's `TimeoutStartSec` does the same).
    pub max_run_duration: Duration,
}

#[derive(Debug, Clone)]
pub struct DetectionConfig {
    pub query: DetectionQuery,
    /// Every parameter bound into the query, built-in defaults overlaid with `[detection.params]`.
    pub params: BTreeMap<String, ParamValue>,
}

#[derive(Debug, Clone, Copy)]
pub struct RevocationPolicy {
    /// Lifetime of an automatic revocation, renewed each time the session is flagged again.
    pub ttl: Duration,
    /// Lifetime of a manual revocation when `revoke` is given no `--ttl`.
    pub manual_ttl: Duration,
    /// After `unrevoke`, automatic detection leaves the session alone this long.
    pub unrevoke_cooldown: Duration,
}

#[derive(Debug, Clone)]
pub struct SafetyConfig {
    pub allow_sessions: Vec<String>,
    pub allow_ips: Vec<ipnet::IpNet>,
    pub max_new_revocations_per_run: usize,
    /// Largest share (0..=1) of the sessions analysed in a run that it may newly revoke.
    pub max_new_revocation_share: f64,
}

#[derive(Debug, Clone)]
pub enum StoreConfig {
    Embedded { path: PathBuf },
    Dynamodb(DynamoConfig),
}

#[derive(Debug, Clone)]
pub struct DynamoConfig {
    pub table: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone)]
pub enum EnforcerConfig {
    File { path: PathBuf, capacity: u32 },
    Wafv2(WafConfig),
}

impl EnforcerConfig {
    /// Attempts at a rule-group update that another writer's lock or change interrupts.
    pub fn max_update_attempts(&self) -> u32 {
        match self {
            EnforcerConfig::Wafv2(w) => w.max_update_attempts,
            // A file changed between reading and writing it (another process, an operator's
            // edit) starts the update over; three attempts and no setting of its own.
            EnforcerConfig::File { .. } => 3,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WafConfig {
    pub name: String,
    pub id: String,
    pub scope: WafScope,
    /// Always `us-east-1` for CLOUDFRONT scope.
    pub region: String,
    pub endpoint: Option<String>,
    /// WCU left for rules of the group that revokd does not own.
    pub reserved_capacity: u32,
    pub max_update_attempts: u32,
}

impl Default for Config {
    fn default() -> Self {
        resolve(RawConfig::default(), None, Path::new(".")).expect("the built-in defaults are valid")
    }
}

impl Config {
    /// Reads and validates a config file; `None` gives the built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_toml(&text, Some(path))
    }

    pub fn from_toml(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { origin: origin_of(path), message: e.to_string().trim_end().to_string() })?;
        // Relative paths in a file are relative to that file, as an operator reading it expects.
        let base = path.and_then(|p| p.parent()).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        resolve(raw, path, &base)
    }

    pub fn origin(&self) -> String {
        origin_of(self.path.as_deref())
    }
}

fn resolve(raw: RawConfig, path: Option<&Path>, base: &Path) -> Result<Config, ConfigError> {
    let origin = origin_of(path);
    let invalid = |key: &str, message: String| ConfigError::Invalid { origin: origin.clone(), key: key.to_string(), message };
    let duration = |key: &str, value: Option<&str>, default: &str| -> Result<Duration, ConfigError> {
        parse_duration(value.unwrap_or(default)).map_err(|message| invalid(key, message))
    };
    // For the settings a zero would defeat: a window of nothing, a run taken for hung at once,
    // a revocation that expires as it is made.
    let longer_than_zero = |key: &str, value: Option<&str>, default: &str| -> Result<Duration, ConfigError> {
        let parsed = duration(key, value, default)?;
        if parsed.is_zero() {
            return Err(invalid(key, "must be longer than 0s".into()));
        }
        Ok(parsed)
    };
    let absolute = |p: &Path| -> PathBuf {
        let joined = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        std::path::absolute(&joined).unwrap_or(joined)
    };

    let state_dir = absolute(raw.state_dir.as_deref().unwrap_or(Path::new("revokd-state")));

    // logs
    let url = raw.logs.url.as_deref().unwrap_or(DEFAULT_LOGS_URL);
    let location = parse_log_location(url, &absolute).map_err(|m| invalid("logs.url", m))?;
    for (i, id) in raw.logs.distribution_ids.iter().enumerate() {
        let key = format!("logs.distribution_ids[{i}]");
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid(&key, format!("`{id}` is not a CloudFront distribution id (letters and digits)")));
        }
        // Log file names hold the id as CloudFront writes it, and S3 keys are case-sensitive:
        // a lower-case id would list nothing, and every run would warn of an empty window.
        if id.bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(invalid(
                &key,
                format!("`{id}`: CloudFront distribution ids are upper case, as in the log file names (`{}`)", id.to_ascii_uppercase()),
            ));
        }
    }
    let max_concurrent_fetches = raw.logs.max_concurrent_fetches.unwrap_or(8);
    if max_concurrent_fetches == 0 {
        return Err(invalid("logs.max_concurrent_fetches", "must be at least 1".into()));
    }
    let logs = LogsConfig {
        location,
        distribution_ids: raw.logs.distribution_ids,
        region: raw.logs.region,
        endpoint: raw.logs.endpoint,
        allow_http: raw.logs.allow_http.unwrap_or(false),
        max_request_duration: duration("logs.max_request_duration", raw.logs.max_request_duration.as_deref(), "5m")?,
        max_delivery_delay: duration("logs.max_delivery_delay", raw.logs.max_delivery_delay.as_deref(), "1h")?,
        max_concurrent_fetches,
        max_retries: raw.logs.max_retries.unwrap_or(10),
        cache: raw.logs.cache.unwrap_or(true),
    };

    // schedule
    let cron = raw.schedule.cron.unwrap_or_else(|| "0 */5 * * * *".to_string());
    crate::daemon::validate_cron(&cron).map_err(|m| invalid("schedule.cron", m))?;
    let lookback = longer_than_zero("schedule.lookback", raw.schedule.lookback.as_deref(), "10m")?;
    // Each run analyses the lookback before it: runs farther apart than that never look at
    // the requests in between, and a leak there is never seen.
    if let Some(gap) = crate::daemon::schedule_gap(&cron, lookback).map_err(|m| invalid("schedule.cron", m))? {
        return Err(invalid(
            "schedule.lookback",
            format!(
                "{} leaves requests unanalysed: schedule.cron = \"{cron}\" runs up to {} apart (after its run on {}); \
                 make the lookback at least that long or run more often (with revokd-run.timer, set schedule.cron to the timer's interval)",
                humantime::format_duration(lookback),
                humantime::format_duration(gap.longest),
                gap.after.format("%A at %H:%M:%S UTC")
            ),
        ));
    }
    let max_run_duration = longer_than_zero("schedule.max_run_duration", raw.schedule.max_run_duration.as_deref(), "10m")?;
    let schedule = ScheduleConfig { cron, lookback, run_on_start: raw.schedule.run_on_start.unwrap_or(true), max_run_duration };

    // detection
    let query_name = raw.detection.query.as_deref().unwrap_or(crate::analysis::DEFAULT_QUERY);
    let query = DetectionQuery::resolve(query_name, base).map_err(|e| invalid("detection.query", e.to_string()))?;
    let params =
        query.bind_params(&raw.detection.params).map_err(|(name, message)| invalid(&format!("detection.params.{name}"), message))?;
    let detection = DetectionConfig { query, params };

    // revocation
    let revocation = RevocationPolicy {
        ttl: longer_than_zero("revocation.ttl", raw.revocation.ttl.as_deref(), "24h")?,
        manual_ttl: longer_than_zero("revocation.manual_ttl", raw.revocation.manual_ttl.as_deref(), "24h")?,
        unrevoke_cooldown: duration("revocation.unrevoke_cooldown", raw.revocation.unrevoke_cooldown.as_deref(), "24h")?,
    };

    // safety
    for (i, id) in raw.safety.allow_sessions.iter().enumerate() {
        crate::session::SessionId::parse(id).map_err(|e| invalid(&format!("safety.allow_sessions[{i}]"), e.to_string()))?;
    }
    let mut allow_ips = Vec::new();
    for (i, cidr) in raw.safety.allow_ips.iter().enumerate() {
        let net = cidr
            .parse::<ipnet::IpNet>()
            .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| invalid(&format!("safety.allow_ips[{i}]"), format!("`{cidr}` is not an IP address or CIDR range")))?;
        allow_ips.push(net);
    }
    let share = raw.safety.max_new_revocation_share.unwrap_or(0.05);
    if !(0.0..=1.0).contains(&share) {
        return Err(invalid("safety.max_new_revocation_share", format!("must be between 0 and 1, found {share}")));
    }
    let safety = SafetyConfig {
        allow_sessions: raw.safety.allow_sessions,
        allow_ips,
        max_new_revocations_per_run: raw.safety.max_new_revocations_per_run.unwrap_or(100),
        max_new_revocation_share: share,
    };

    // store
    let store = match raw.store.backend.unwrap_or(StoreBackend::Embedded) {
        StoreBackend::Embedded => StoreConfig::Embedded {
            path: raw.store.embedded.path.map(|p| absolute(&p)).unwrap_or_else(|| state_dir.join("revocations.sqlite")),
        },
        StoreBackend::Dynamodb => {
            let table = raw.store.dynamodb.table.unwrap_or_else(|| "revokd-revocations".into());
            if !(3..=255).contains(&table.len()) || !table.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
                return Err(invalid(
                    "store.dynamodb.table",
                    format!("`{table}` is not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)"),
                ));
            }
            StoreConfig::Dynamodb(DynamoConfig { table, region: raw.store.dynamodb.region, endpoint: raw.store.dynamodb.endpoint })
        }
    };

    // enforcer
    let enforcer = match raw.enforcer.backend.unwrap_or(EnforcerBackend::File) {
        EnforcerBackend::File => {
            let capacity = raw.enforcer.file.capacity.unwrap_or(1500);
            if capacity > crate::enforcer::MAX_RULE_GROUP_CAPACITY {
                return Err(invalid(
                    "enforcer.file.capacity",
                    format!("WAF rule groups hold at most {} WCU, found {capacity}", crate::enforcer::MAX_RULE_GROUP_CAPACITY),
                ));
            }
            EnforcerConfig::File {
                path: raw.enforcer.file.path.map(|p| absolute(&p)).unwrap_or_else(|| state_dir.join("rule-group.json")),
                capacity,
            }
        }
        EnforcerBackend::Wafv2 => {
            let waf = raw.enforcer.wafv2;
            let name = waf.name.ok_or_else(|| invalid("enforcer.wafv2.name", "is required when backend = \"wafv2\"".into()))?;
            let id = waf.id.ok_or_else(|| invalid("enforcer.wafv2.id", "is required when backend = \"wafv2\"".into()))?;
            let scope = waf.scope.unwrap_or(WafScope::Cloudfront);
            let region = match (scope, waf.region) {
                (WafScope::Cloudfront, Some(r)) if r != "us-east-1" => {
                    return Err(invalid("enforcer.wafv2.region", format!("CLOUDFRONT-scope rule groups live in us-east-1, not {r}")));
                }
                (WafScope::Cloudfront, _) => "us-east-1".to_string(),
                (WafScope::Regional, Some(r)) => r,
                (WafScope::Regional, None) => return Err(invalid("enforcer.wafv2.region", "is required when scope = \"REGIONAL\"".into())),
            };
            let max_update_attempts = waf.max_update_attempts.unwrap_or(5);
            if max_update_attempts == 0 {
                return Err(invalid("enforcer.wafv2.max_update_attempts", "must be at least 1".into()));
            }
            EnforcerConfig::Wafv2(WafConfig {
                name,
                id,
                scope,
                region,
                endpoint: waf.endpoint,
                reserved_capacity: waf.reserved_capacity.unwrap_or(0),
                max_update_attempts,
            })
        }
    };

    Ok(Config {
        path: path.map(Path::to_path_buf),
        state_dir,
        mode: raw.mode.unwrap_or(Mode::Enforce),
        logs,
        schedule,
        detection,
        revocation,
        safety,
        store,
        enforcer,
    })
}

fn parse_log_location(url: &str, absolute: &dyn Fn(&Path) -> PathBuf) -> Result<LogLocation, String> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("`{url}` has no bucket name (expected s3://bucket/prefix)"));
        }
        return Ok(LogLocation::S3 { bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string() });
    }
    let path = match url.strip_prefix("file://") {
        Some(p) => p,
        None if url.contains("://") => return Err(format!("`{url}`: only file:// and s3:// locations are supported")),
        None => url,
    };
    if path.is_empty() {
        return Err("the directory path is empty".into());
    }
    Ok(LogLocation::Local(absolute(Path::new(path))))
}

/// The longest duration any setting takes: a revocation for good, in practice. Times are
/// computed from these (an expiry, a window's start), and far larger ones overflow them.
/// 100 years of 365.25 days, as `100y` reads.
const MAX_DURATION: Duration = Duration::from_secs(100 * 36_525 * 864);

/// Parses durations like `30s`, `10m`, `24h`, `1h 30m`, up to 100 years.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration like \"30s\", \"10m\" or \"24h\" ({e})"))?;
    if duration > MAX_DURATION {
        return Err(format!("`{text}` is longer than 100 years, the longest duration revokd takes"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_past_a_century_are_refused_before_any_time_is_computed_from_them() {
        assert_eq!(parse_duration("100y").map(|d| d.as_secs() / 86_400), Ok(36_525));
        for text in ["300000y", "999999999999y"] {
            let error = parse_duration(text).unwrap_err();
            assert!(error.contains(text), "{error}");
        }
    }

    #[test]
    fn defaults_need_no_aws() {
        let config = Config::default();
        assert!(matches!(config.store, StoreConfig::Embedded { .. }));
        assert!(matches!(config.enforcer, EnforcerConfig::File { .. }));
        assert!(matches!(config.logs.location, LogLocation::Local(_)));
        assert_eq!(config.schedule.lookback, Duration::from_secs(600));
        assert_eq!(config.mode, Mode::Enforce);
    }

    #[test]
    fn unknown_key_is_rejected_with_file_and_key() {
        let err = Config::from_toml("[logs]\nurll = \"x\"\n", Some(Path::new("/etc/revokd.toml"))).unwrap_err().to_string();
        assert!(err.contains("/etc/revokd.toml"), "{err}");
        assert!(err.contains("urll"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn a_distribution_id_that_would_match_no_log_file_is_refused_naming_it() {
        let config = Config::from_toml("[logs]\ndistribution_ids = [\"E2EXAMPLE1\"]\n", None).unwrap();
        assert_eq!(config.logs.distribution_ids, ["E2EXAMPLE1"]);
        let err = Config::from_toml("[logs]\ndistribution_ids = [\"E2EXAMPLE1\", \"e3example\"]\n", None).unwrap_err().to_string();
        assert!(err.contains("logs.distribution_ids[1]") && err.contains("upper case") && err.contains("`E3EXAMPLE`"), "{err}");
        let err = Config::from_toml("[logs]\ndistribution_ids = [\"E2/X\"]\n", None).unwrap_err().to_string();
        assert!(err.contains("logs.distribution_ids[0]") && err.contains("letters and digits"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_key() {
        let err = Config::from_toml("[schedule]\nlookback = \"ten minutes\"\n", None).unwrap_err().to_string();
        assert!(err.contains("schedule.lookback"), "{err}");
        assert!(err.contains("ten minutes"), "{err}");
    }

    #[test]
    fn wafv2_requires_name_and_id() {
        let err = Config::from_toml("[enforcer]\nbackend = \"wafv2\"\n", None).unwrap_err().to_string();
        assert!(err.contains("enforcer.wafv2.name"), "{err}");
    }

    #[test]
    fn cloudfront_scope_forces_us_east_1() {
        let text = "[enforcer]\nbackend = \"wafv2\"\n[enforcer.wafv2]\nname = \"g\"\nid = \"i\"\nregion = \"eu-west-1\"\n";
        let err = Config::from_toml(text, None).unwrap_err().to_string();
        assert!(err.contains("us-east-1"), "{err}");
        let ok = "[enforcer]\nbackend = \"wafv2\"\n[enforcer.wafv2]\nname = \"g\"\nid = \"i\"\n";
        match Config::from_toml(ok, None).unwrap().enforcer {
            EnforcerConfig::Wafv2(w) => assert_eq!(w.region, "us-east-1"),
            other => panic!("expected wafv2, got {other:?}"),
        }
    }

    #[test]
    fn s3_url_splits_bucket_and_prefix() {
        let c = Config::from_toml("[logs]\nurl = \"s3://my-logs/cf/prod/\"\n", None).unwrap();
        assert_eq!(c.logs.location, LogLocation::S3 { bucket: "my-logs".into(), prefix: "cf/prod".into() });
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let c = Config::from_toml("state_dir = \"state\"\n", Some(Path::new("/etc/revokd/revokd.toml"))).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/etc/revokd/state"));
    }

    #[test]
    fn detection_param_type_is_checked() {
        let err = Config::from_toml("[detection]\nquery = \"reference\"\n[detection.params]\nthreshold = \"high\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("detection.params.threshold"), "{err}");
    }

    #[test]
    fn duration_params_bind_as_seconds() {
        let c = Config::from_toml("[detection]\nquery = \"reference\"\n[detection.params]\nmin_duration_s = \"2m\"\n", None).unwrap();
        assert_eq!(c.detection.params["min_duration_s"], ParamValue::Int(120));
    }

    #[test]
    fn example_config_is_valid_and_states_the_defaults() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/revokd.example.toml"));
        let example = Config::load(Some(path)).unwrap();
        let defaults = Config::default();
        assert_eq!(example.schedule.cron, defaults.schedule.cron);
        assert_eq!(example.schedule.lookback, defaults.schedule.lookback);
        assert_eq!(example.schedule.max_run_duration, defaults.schedule.max_run_duration);
        assert_eq!(example.revocation.ttl, defaults.revocation.ttl);
        assert_eq!(example.logs.max_request_duration, defaults.logs.max_request_duration);
        assert_eq!(example.logs.max_delivery_delay, defaults.logs.max_delivery_delay);
        assert_eq!(example.safety.max_new_revocations_per_run, defaults.safety.max_new_revocations_per_run);
        assert_eq!(example.detection.query.name, defaults.detection.query.name);
        assert_eq!(example.mode, defaults.mode);
    }

    #[test]
    fn bad_cron_names_the_key() {
        let err = Config::from_toml("[schedule]\ncron = \"every minute\"\n", None).unwrap_err().to_string();
        assert!(err.contains("schedule.cron"), "{err}");
    }

    #[test]
    fn a_lookback_that_leaves_requests_between_runs_unanalysed_is_refused() {
        // Runs every 5 minutes over the 2 minutes before each: 3 minutes in 5 never analysed.
        let err = Config::from_toml("[schedule]\nlookback = \"2m\"\n", None).unwrap_err().to_string();
        assert!(err.contains("schedule.lookback") && err.contains("runs up to 5m apart"), "{err}");
        // The same lookback on a schedule as frequent is fine.
        let every_2m = Config::from_toml("[schedule]\ncron = \"0 */2 * * * *\"\nlookback = \"2m\"\n", None);
        assert!(every_2m.is_ok(), "{:?}", every_2m.err());
        let err = Config::from_toml("[schedule]\ncron = \"0 0 0 30 2 *\"\n", None).unwrap_err().to_string();
        assert!(err.contains("schedule.cron") && err.contains("never runs"), "{err}");
    }
}
