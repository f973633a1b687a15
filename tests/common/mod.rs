//! Test helpers: the real `revokd` binary in a temporary directory, CloudFront log lines built
//! by hand (so expected scores can be worked out independently), and AWS clients pointed at
//! the moto emulator that `scripts/test` starts.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use revokd::source::cloudfront::CURRENT_FIELDS;

/// 2026-11-20T10:00:00Z: the start of every hand-built log.
pub const T0: i64 = 1_795_168_800;

pub fn rfc3339(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", fastrand::u32(..))
}

// ---------------------------------------------------------------------------------------------
// Log lines

/// One 33-field CloudFront line.
#[allow(clippy::too_many_arguments)]
pub fn line(ts: i64, edge: &str, bytes: u64, ip: &str, uri: &str, status: u16, referer: &str, ua: &str) -> String {
    let t = chrono::DateTime::from_timestamp(ts, 0).unwrap();
    let mut f: Vec<String> = CURRENT_FIELDS.split(' ').map(|_| "-".to_string()).collect();
    f[0] = t.format("%Y-%m-%d").to_string();
    f[1] = t.format("%H:%M:%S").to_string();
    f[2] = edge.into();
    f[3] = bytes.to_string();
    f[4] = ip.into();
    f[5] = "GET".into();
    f[6] = "d1example.cloudfront.net".into();
    f[7] = uri.into();
    f[8] = status.to_string();
    f[9] = referer.into();
    f[10] = ua.replace(' ', "%20");
    f[13] = "Hit".into();
    f[16] = "https".into();
    f.join("\t")
}

/// A viewer of a live channel on `session`'s token: one segment every `period` s over
/// `[start, end)`, named by the live clock so co-viewers fetch the same segments.
pub struct Viewer<'a> {
    pub session: &'a str,
    pub ip: &'a str,
    pub ua: &'a str,
    pub referer: &'a str,
    pub edge: &'a str,
    pub start: i64,
    pub end: i64,
    pub period: i64,
    pub rendition: &'a str,
    /// VOD from this segment on (one per period from `start`); None: the live channel.
    pub vod_from: Option<i64>,
}

impl Viewer<'_> {
    pub fn lines(&self) -> Vec<String> {
        let uri_of = |t: i64| {
            let token = format!("/{}.eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ2In0.c2ln", self.session);
            match self.vod_from {
                None => format!("{token}/live/ch1/{}/seg_{:06}.ts", self.rendition, t / self.period),
                Some(from) => format!("{token}/vod/title7/{}/seg_{:06}.ts", self.rendition, from + (t - self.start) / self.period),
            }
        };
        (self.start..self.end)
            .step_by(self.period as usize)
            .map(|t| line(t, self.edge, 1_500_000, self.ip, &uri_of(t), 200, self.referer, self.ua))
            .collect()
    }

    /// The reference's inputs for this viewer alone: (requests, first, last).
    pub fn span(&self) -> (usize, i64, i64) {
        let times: Vec<i64> = (self.start..self.end).step_by(self.period as usize).collect();
        (times.len(), times[0], *times.last().unwrap())
    }
}

pub fn viewer<'a>(session: &'a str, ip: &'a str, ua: &'a str) -> Viewer<'a> {
    Viewer {
        session,
        ip,
        ua,
        referer: "https://watch.example.com/",
        edge: "IAD89-C1",
        start: T0 + 3,
        end: T0 + 600,
        period: 6,
        rendition: "720p",
        vod_from: None,
    }
}

pub fn log_text(lines: &[String]) -> String {
    let mut text = format!("#Version: 1.0\n#Fields: {CURRENT_FIELDS}\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    text
}

pub fn gzip(text: &str) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap()
}

/// Four honest viewers (one device each) and the given extra lines, as one gz log file for
/// the 10:00 hour in `dir`.
pub fn write_hour(dir: &Path, lines: &[String]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("E1EXAMPLE.2026-11-20-10.0001.gz");
    std::fs::write(&path, gzip(&log_text(lines))).unwrap();
    path
}

pub fn honest_viewers() -> Vec<String> {
    honest_viewers_between(T0 + 3, T0 + 600)
}

/// Four honest viewers, one device each, playing over `[start, end)`.
pub fn honest_viewers_between(start: i64, end: i64) -> Vec<String> {
    let ids = ["honest1", "honest2", "honest3", "honest4"];
    let mut lines = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let ip = format!("198.51.100.{}", i + 1);
        lines.extend(Viewer { start, end, ..viewer(id, &ip, "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0") }.lines());
    }
    lines
}

/// A token shared by `n` viewers on different addresses, agents and referers.
pub fn shared_session(session: &str, n: usize) -> Vec<String> {
    shared_session_between(session, n, T0 + 3, T0 + 600)
}

/// [`shared_session`], played over `[start, end)`.
pub fn shared_session_between(session: &str, n: usize, start: i64, end: i64) -> Vec<String> {
    let mut lines = Vec::new();
    for k in 0..n {
        let ip = format!("203.0.113.{}", 10 + k);
        let ua = format!("Mozilla/5.0 Viewer{k}");
        let referer = format!("https://pirate{k}.example/");
        let v = Viewer { referer: &referer, start, end, ..viewer(session, &ip, &ua) };
        lines.extend(v.lines());
    }
    lines
}

/// `lines` as a gz log file in `dir`, named as CloudFront names the file of the hour holding
/// `hour_of` (`id` tells files of one hour apart), and last modified at `delivered`: when
/// CloudFront delivered it.
pub fn write_delivered(dir: &Path, hour_of: i64, id: &str, lines: &[String], delivered: std::time::SystemTime) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let hour = chrono::DateTime::from_timestamp(hour_of, 0).unwrap().format("%Y-%m-%d-%H");
    let path = dir.join(format!("E1EXAMPLE.{hour}.{id}.gz"));
    std::fs::write(&path, gzip(&log_text(lines))).unwrap();
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(delivered).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// The binary

pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Workdir { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `revokd <args>` in this directory with the emulator's AWS environment (if any).
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_of(Path::new(env!("CARGO_BIN_EXE_revokd")), args)
    }

    /// [`Workdir::command`] with a copy of the binary at `binary`.
    pub fn command_of(&self, binary: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary);
        cmd.args(args).current_dir(self.dir.path()).env("RUST_LOG", "info").env_remove("REVOKD_CONFIG");
        if let Ok(endpoint) = std::env::var("REVOKD_TEST_AWS_ENDPOINT") {
            cmd.env("AWS_ENDPOINT_URL", endpoint);
        }
        cmd
    }

    /// Runs `revokd <args>` (see [`Workdir::command`]).
    pub fn revokd(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and requires success; returns stderr (the logs).
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.revokd(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "revokd {args:?} failed ({}):\n{stderr}", out.status);
        stderr
    }

    /// `revokd run` with `revokd.toml` as if it were `now`, required to succeed: its logs and
    /// its JSON report.
    pub fn run_at(&self, now: i64) -> (String, serde_json::Value) {
        let logs = self.ok(&["run", "--config", "revokd.toml", "--now", &rfc3339(now), "--report", "report.json"]);
        (logs, self.report("report.json"))
    }

    pub fn report(&self, rel: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.path(rel)).unwrap()).unwrap()
    }
}

/// `(session_id, score)` of every flagged session in a run report.
pub fn flagged(report: &serde_json::Value) -> Vec<(String, f64)> {
    report["flagged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["session_id"].as_str().unwrap().to_string(), f["score"].as_f64().unwrap()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The emulator

pub struct Emulator {
    pub endpoint: String,
    pub bucket: String,
}

/// The moto endpoint started by `scripts/test`.
pub fn emulator() -> Emulator {
    let endpoint = std::env::var("REVOKD_TEST_AWS_ENDPOINT")
        .expect("REVOKD_TEST_AWS_ENDPOINT is not set: run the suite with scripts/test, which starts the moto emulator");
    let bucket = std::env::var("REVOKD_TEST_BUCKET").unwrap_or_else(|_| "revokd-test-logs".into());
    Emulator { endpoint, bucket }
}

impl Emulator {
    async fn sdk(&self) -> aws_config::SdkConfig {
        revokd::aws::sdk_config(Some("us-east-1"), Some(&self.endpoint)).await
    }

    pub async fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk().await)
    }

    pub async fn waf(&self) -> aws_sdk_wafv2::Client {
        aws_sdk_wafv2::Client::new(&self.sdk().await)
    }

    pub fn s3(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .unwrap()
    }

    pub async fn upload(&self, key: &str, bytes: Vec<u8>) {
        use object_store::ObjectStoreExt;
        self.s3().put(&object_store::path::Path::from(key), bytes.into()).await.unwrap();
    }

    /// A CLOUDFRONT-scope rule group; returns its id.
    pub async fn rule_group(&self, name: &str, capacity: i64) -> String {
        let vis = aws_sdk_wafv2::types::VisibilityConfig::builder()
            .sampled_requests_enabled(true)
            .cloud_watch_metrics_enabled(true)
            .metric_name(name)
            .build()
            .unwrap();
        let out = self
            .waf()
            .await
            .create_rule_group()
            .name(name)
            .scope(aws_sdk_wafv2::types::Scope::Cloudfront)
            .capacity(capacity)
            .visibility_config(vis)
            .send()
            .await
            .unwrap();
        out.summary.unwrap().id.unwrap()
    }

    /// `(lock token, [(name, priority, search string)])` of a rule group.
    pub async fn rules(&self, name: &str, id: &str) -> (String, Vec<(String, i32, String)>) {
        let out = self.waf().await.get_rule_group().name(name).id(id).scope(aws_sdk_wafv2::types::Scope::Cloudfront).send().await.unwrap();
        let rules = out
            .rule_group
            .unwrap()
            .rules()
            .iter()
            .map(|r| {
                let search = r
                    .statement()
                    .and_then(|s| s.byte_match_statement())
                    .map(|b| String::from_utf8_lossy(b.search_string().as_ref()).into_owned())
                    .unwrap_or_default();
                (r.name().to_string(), r.priority(), search)
            })
            .collect();
        (out.lock_token.unwrap(), rules)
    }

    /// Every item of a table as `session_id -> attributes`.
    pub async fn items(
        &self,
        table: &str,
    ) -> std::collections::BTreeMap<String, std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        let out = self.dynamodb().await.scan().table_name(table).send().await.unwrap();
        out.items().iter().map(|i| (i["session_id"].as_s().unwrap().clone(), i.clone())).collect()
    }

    /// A config for S3 logs under `prefix`, a DynamoDB table and a rule group.
    pub fn config(&self, prefix: &str, table: &str, group: &str, group_id: &str, extra: &str) -> String {
        format!(
            r#"state_dir = "state"
[logs]
url = "s3://{bucket}/{prefix}"
endpoint = "{endpoint}"
region = "us-east-1"
allow_http = true
[detection]
query = "reference"
[store]
backend = "dynamodb"
[store.dynamodb]
table = "{table}"
endpoint = "{endpoint}"
region = "us-east-1"
[enforcer]
backend = "wafv2"
[enforcer.wafv2]
name = "{group}"
id = "{group_id}"
endpoint = "{endpoint}"
{extra}
"#,
            bucket = self.bucket,
            endpoint = self.endpoint,
        )
    }
}

pub fn num(item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>, key: &str) -> f64 {
    item[key].as_n().unwrap().parse().unwrap()
}

pub fn text<'a>(item: &'a std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>, key: &str) -> &'a str {
    item[key].as_s().unwrap()
}
