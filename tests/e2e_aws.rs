//! End to end against the moto AWS emulator (started by `scripts/test`): gz logs in S3, the
//! revocation table created by `revokd migrate`, a CLOUDFRONT rule group; the real binary.
//!
//! moto does not empty a rule group sent an empty rule list, does not check capacity, and
//! never runs TTL: those paths are unit-tested in `src/enforcer/mod.rs` and
//! `tests/store_contract.rs`. Here every run keeps at least one rule in the group.
//! Nor does moto throttle or take its time: a proxy in front of it (`S3Proxy`) answers
//! `503 Slow Down` and holds requests, for the S3 retry and concurrency tests.

mod common;

use common::*;

struct Setup {
    emu: Emulator,
    work: Workdir,
    table: String,
    group: String,
    group_id: String,
}

impl Setup {
    async fn new(log_lines: &[String], extra_config: &str) -> Setup {
        let emu = emulator();
        let work = Workdir::new();
        let (prefix, table, group) = (unique("cf"), unique("revocations"), unique("revokd"));
        let key = format!("{prefix}/E1EXAMPLE.2026-11-20-10.0001.gz");
        emu.upload(&key, gzip(&log_text(log_lines))).await;
        let group_id = emu.rule_group(&group, 1000).await;
        work.write("revokd.toml", &emu.config(&prefix, &table, &group, &group_id, extra_config));
        work.ok(&["migrate", "--config", "revokd.toml"]);
        Setup { emu, work, table, group, group_id }
    }

    fn run(&self, now: i64) -> serde_json::Value {
        self.work.run_at(now).1
    }

    async fn rules(&self) -> (String, Vec<(String, i32, String)>) {
        self.emu.rules(&self.group, &self.group_id).await
    }
}

fn two_leaks() -> Vec<String> {
    let mut lines = honest_viewers();
    lines.extend(shared_session("leak3", 3));
    lines.extend(shared_session("leak2", 2));
    lines
}

#[tokio::test]
async fn run_records_flagged_sessions_with_scores_and_blocks_exactly_them() {
    let s = Setup::new(&two_leaks(), "").await;
    let report = s.run(T0 + 600);
    assert_eq!(report["error"], serde_json::Value::Null);

    // Honest rate r = 100 pairs / 594 s; a token shared by n viewers has rate n·r and all
    // three penalties: score n + 3. The honest ones score 1.
    let got = flagged(&report);
    assert_eq!(got.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), vec!["leak3", "leak2"]);
    assert!((got[0].1 - 6.0).abs() < 1e-9, "{got:?}");
    assert!((got[1].1 - 5.0).abs() < 1e-9, "{got:?}");

    let items = s.emu.items(&s.table).await;
    assert_eq!(items.keys().collect::<Vec<_>>(), vec!["leak2", "leak3"]);
    for (id, score) in &got {
        let item = &items[id];
        assert_eq!(text(item, "type"), "AUTO");
        assert!((num(item, "score") - score).abs() < 1e-9);
        assert_eq!(num(item, "expires_at") as i64, T0 + 600 + 86_400, "TTL attribute = now + revocation.ttl");
        assert!(text(item, "reason").contains("viewer IPs"), "reason kept: {}", text(item, "reason"));
    }

    let (_, rules) = s.rules().await;
    assert_eq!(
        rules,
        vec![("revokd-leak2".to_string(), 0, "/leak2.".to_string()), ("revokd-leak3".to_string(), 1, "/leak3.".to_string()),],
        "one STARTS_WITH rule per session, ordered by id"
    );
}

#[tokio::test]
async fn manual_entry_ranks_first_and_is_never_overwritten_by_detection() {
    let s = Setup::new(&two_leaks(), "").await;
    // An operator revoked leak2 earlier (for 2 days) and another session not in the logs.
    s.work.ok(&["revoke", "leak2", "--ttl", "48h", "--reason", "ticket OPS-1", "--config", "revokd.toml", "--no-enforce"]);
    s.work.ok(&["revoke", "ops-pick", "--ttl", "48h", "--config", "revokd.toml", "--no-enforce"]);
    let before = s.emu.items(&s.table).await["leak2"].clone();

    let report = s.run(T0 + 600);
    let leak2 = report["flagged"].as_array().unwrap().iter().find(|f| f["session_id"] == "leak2").unwrap();
    assert_eq!(leak2["action"], "protected_manual");

    let after = s.emu.items(&s.table).await;
    assert_eq!(after["leak2"], before, "the MANUAL item is untouched");
    assert_eq!(text(&after["leak3"], "type"), "AUTO");

    let (_, rules) = s.rules().await;
    let names: Vec<&str> = rules.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, vec!["revokd-leak2", "revokd-ops-pick", "revokd-leak3"], "MANUAL first, then AUTO, each by id");
}

#[tokio::test]
async fn clean_run_changes_nothing() {
    let s = Setup::new(&honest_viewers(), "").await;
    let (token_before, rules_before) = s.rules().await;
    let report = s.run(T0 + 600);
    assert_eq!(report["counters"]["sessions_analysed"], 4);
    assert_eq!(report["counters"]["flagged"], 0);
    assert!(s.emu.items(&s.table).await.is_empty());
    let (token_after, rules_after) = s.rules().await;
    assert_eq!(token_after, token_before, "no UpdateRuleGroup call");
    assert_eq!(rules_after, rules_before);
}

#[tokio::test]
async fn second_identical_run_makes_no_update_call() {
    let s = Setup::new(&two_leaks(), "").await;
    let first = s.run(T0 + 600);
    assert_eq!(first["counters"]["rule_group_updated"], true);
    let (token, rules) = s.rules().await;
    let second = s.run(T0 + 600);
    assert_eq!(second["counters"]["rule_group_updated"], false);
    assert_eq!(second["counters"]["renewed"], 2);
    assert_eq!(s.rules().await, (token, rules), "lock token unchanged: no UpdateRuleGroup");
}

#[tokio::test]
async fn dry_run_reads_and_analyses_but_writes_nothing() {
    let s = Setup::new(&two_leaks(), "").await;
    let (token, _) = s.rules().await;
    s.work.ok(&["run", "--config", "revokd.toml", "--now", &rfc3339(T0 + 600), "--dry-run", "--report", "r.json"]);
    let report = s.work.report("r.json");
    assert_eq!(report["counters"]["flagged"], 2);
    assert!(s.emu.items(&s.table).await.is_empty());
    assert_eq!(s.rules().await.0, token);
}

#[tokio::test]
async fn expired_revocations_lose_their_rules_before_ttl_deletes_them() {
    let s = Setup::new(&two_leaks(), "[revocation]\nttl = \"1h\"\n").await;
    s.work.ok(&["revoke", "keeper", "--ttl", "72h", "--config", "revokd.toml", "--no-enforce"]);
    s.run(T0 + 600);
    assert_eq!(s.rules().await.1.len(), 3);

    // Two hours later the AUTO entries are past expires_at; moto, like DynamoDB before its
    // lazy TTL sweep, still holds them.
    let later = s.run(T0 + 600 + 7200);
    assert_eq!(later["counters"]["flagged"], 0, "no logs in the later window");
    let items = s.emu.items(&s.table).await;
    assert!(items.contains_key("leak3") && items.contains_key("leak2"), "items not deleted yet");
    let (_, rules) = s.rules().await;
    assert_eq!(rules.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), vec!["revokd-keeper"]);
    assert_eq!(later["counters"]["rules_removed"], 2);
}

#[tokio::test]
async fn unrevoked_session_is_not_revoked_again_during_its_cooldown() {
    let s = Setup::new(&two_leaks(), "").await;
    s.run(T0 + 600);
    s.work.ok(&["unrevoke", "leak3", "--config", "revokd.toml"]);
    let items = s.emu.items(&s.table).await;
    assert_eq!(text(&items["leak3"], "type"), "UNREVOKED");
    let report = s.run(T0 + 600);
    let leak3 = report["flagged"].as_array().unwrap().iter().find(|f| f["session_id"] == "leak3").unwrap();
    assert_eq!(leak3["action"], "in_cooldown");
    assert_eq!(text(&s.emu.items(&s.table).await["leak3"], "type"), "UNREVOKED");
    let (_, rules) = s.rules().await;
    assert_eq!(rules.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), vec!["revokd-leak2"]);
}

#[tokio::test]
async fn more_than_25_writes_go_in_batches_and_all_land() {
    // 40 honest sessions keep the median rate honest; 30 shared tokens are flagged.
    let mut lines = Vec::new();
    for i in 0..40 {
        let (id, ip) = (format!("h{i:02}"), format!("198.51.100.{}", i + 1));
        lines.extend(viewer(&id, &ip, "Mozilla/5.0 Chrome/131.0").lines());
    }
    for i in 0..30 {
        lines.extend(shared_session(&format!("leak{i:02}"), 2));
    }
    // 30 of 70 sessions trips the default blast-radius guard (5 %); this test is about batching.
    let s = Setup::new(&lines, "[safety]\nmax_new_revocation_share = 1.0\n").await;
    let report = s.run(T0 + 600);
    assert_eq!(report["counters"]["newly_revoked"], 30);
    let auto = s.emu.items(&s.table).await.into_values().filter(|i| text(i, "type") == "AUTO").count();
    assert_eq!(auto, 30, "TransactWriteItems in chunks of 25 wrote all");

    let ids: Vec<String> = (0..60).map(|i| format!("bulk{i:02}")).collect();
    let mut args = vec!["revoke", "--config", "revokd.toml", "--no-enforce"];
    args.extend(ids.iter().map(String::as_str));
    s.work.ok(&args);
    let manual = s.emu.items(&s.table).await.into_values().filter(|i| text(i, "type") == "MANUAL").count();
    assert_eq!(manual, 60, "BatchWriteItem in chunks of 25 wrote all");
}

#[tokio::test]
async fn realistic_gzip_logs_in_s3_end_in_table_and_rule_group_consistently() {
    use revokd::sim::{self, Scenario};
    let emu = emulator();
    let scenario = Scenario { seed: 11, start: T0, duration_s: 1800, honest_sessions: 60, leaks: 3, restreamers: 1, market: "US" };
    let traffic = sim::generate(&scenario);
    let files = tempfile::tempdir().unwrap();
    let written = sim::logfile::write_files(&traffic, files.path(), "", &Default::default()).unwrap();
    let prefix = unique("cf");
    for path in &written {
        let key = format!("{prefix}/{}", path.file_name().unwrap().to_str().unwrap());
        emu.upload(&key, std::fs::read(path).unwrap()).await;
    }
    let work = Workdir::new();
    let (table, group) = (unique("revocations"), unique("revokd"));
    let group_id = emu.rule_group(&group, 1000).await;
    work.write("revokd.toml", &emu.config(&prefix, &table, &group, &group_id, ""));
    work.ok(&["migrate", "--config", "revokd.toml"]);
    let (_, report) = work.run_at(T0 + 1800);

    assert_eq!(report["counters"]["objects"], written.len());
    assert_eq!(report["counters"]["rows"], traffic.requests.len(), "every simulated request read from S3");
    assert_eq!(report["counters"]["malformed_lines"], 0);
    let flagged = flagged(&report);
    assert!(!flagged.is_empty());
    let items = emu.items(&table).await;
    assert_eq!(items.len(), flagged.len());
    for (id, score) in &flagged {
        assert!((num(&items[id], "score") - score).abs() < 1e-9, "{id}");
    }
    let (_, rules) = emu.rules(&group, &group_id).await;
    let mut ruled: Vec<&str> = rules.iter().map(|r| r.2.trim_start_matches('/').trim_end_matches('.')).collect();
    let mut expected: Vec<&str> = flagged.iter().map(|(id, _)| id.as_str()).collect();
    ruled.sort();
    expected.sort();
    assert_eq!(ruled, expected);
}

/// An operator whose AWS credentials are in a shared profile (or SSO, or a
/// `credential_process`), not in the environment: the S3 logs are read with them, as the
/// table and the rule group are. object_store's own lookup knew only the environment and the
/// instance role, and the run failed on the instance metadata service.
#[tokio::test]
async fn credentials_from_a_shared_profile_sign_s3_as_well_as_dynamodb_and_waf() {
    let emu = emulator();
    let prefix = unique("cf");
    let lines = two_leaks();
    emu.upload(&format!("{prefix}/E2EXAMPLE.2026-11-20-10.profile.gz"), gzip(&log_text(&lines))).await;
    let work = Workdir::new();
    let (table, group) = (unique("revocations"), unique("revokd"));
    let group_id = emu.rule_group(&group, 1000).await;
    work.write("revokd.toml", &emu.config(&prefix, &table, &group, &group_id, ""));
    let credentials = work.write("aws/credentials", "[logs-reader]\naws_access_key_id = testing\naws_secret_access_key = testing\n");
    let profiles = work.write("aws/config", "[profile logs-reader]\nregion = us-east-1\n");
    let with_profile_only = |args: &[&str]| {
        let mut cmd = work.command(args);
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env("AWS_CONFIG_FILE", &profiles)
            .env("AWS_PROFILE", "logs-reader");
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "revokd {args:?} failed:\n{stderr}");
    };
    with_profile_only(&["migrate", "--config", "revokd.toml"]);
    with_profile_only(&["run", "--config", "revokd.toml", "--now", &rfc3339(T0 + 600), "--report", "report.json"]);
    let report = work.report("report.json");
    assert_eq!(report["counters"]["objects"], 1);
    assert_eq!(report["counters"]["rows"], lines.len());
    assert_eq!(flagged(&report).into_iter().map(|(id, _)| id).collect::<Vec<_>>(), ["leak3", "leak2"]);
    let (_, rules) = emu.rules(&group, &group_id).await;
    assert_eq!(rules.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(), ["/leak2.", "/leak3."]);
}

/// No region in the config, the environment or a profile: the SDK would fail every call on
/// signing, in a dump of its internals. revokd says which setting is missing instead.
#[test]
fn a_dynamodb_store_without_a_region_anywhere_is_named_with_the_settings_to_check() {
    let work = Workdir::new();
    work.write("revokd.toml", "[store]\nbackend = \"dynamodb\"\n[store.dynamodb]\ntable = \"revocations\"\n");
    let no_profile = work.write("aws/config", "");
    let out = work
        .command(&["migrate", "--config", "revokd.toml"])
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", &no_profile)
        .env("AWS_SHARED_CREDENTIALS_FILE", &no_profile)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("DynamoDB table revocations: connect: no AWS region: set store.dynamodb.region, AWS_REGION"), "{stderr}");
}

#[tokio::test]
async fn blast_radius_guard_holds_a_mass_revocation_for_review() {
    let mut lines = Vec::new();
    for i in 0..40 {
        let (id, ip) = (format!("h{i:02}"), format!("198.51.100.{}", i + 1));
        lines.extend(viewer(&id, &ip, "Mozilla/5.0 Chrome/131.0").lines());
    }
    for i in 0..12 {
        lines.extend(shared_session(&format!("leak{i:02}"), 2));
    }
    let s = Setup::new(&lines, "[safety]\nmax_new_revocations_per_run = 10\n").await;
    s.work.ok(&["revoke", "keeper", "--config", "revokd.toml"]);
    let report = s.run(T0 + 600);
    assert_eq!(report["counters"]["flagged"], 12);
    assert_eq!(report["counters"]["newly_revoked"], 0);
    assert_eq!(report["counters"]["held"], 12);
    assert!(report["guard_tripped"].as_str().unwrap().contains("max_new_revocations_per_run"));
    let items = s.emu.items(&s.table).await;
    let held = items.values().filter(|i| text(i, "type") == "HELD").count();
    assert_eq!(held, 12, "held for review in the table");
    assert!(items.values().all(|i| !i.contains_key("active") || text(i, "type") == "MANUAL"), "held entries are not active");
    let (_, rules) = s.rules().await;
    assert_eq!(rules.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), vec!["revokd-keeper"]);
}

/// S3 returns keys in order and honours `start-after`: without configured distribution ids
/// the listing still jumps to each distribution's window hours and past them.
#[tokio::test]
async fn s3_listing_without_distribution_ids_finds_each_distributions_window_files() {
    use revokd::source::{LogSource, names};
    let emu = emulator();
    let prefix = unique("cf");
    let window_hour = names::parse_hour_stamp("2026-11-20-10").unwrap();
    let mut expected = Vec::new();
    for dist in ["E1", "E2ABC", "sub/E1"] {
        for hour in window_hour - 5..=window_hour + 3 {
            let key = format!("{prefix}/{dist}.{}.0001.gz", names::hour_stamp(hour));
            emu.upload(&key, b"x".to_vec()).await;
            if hour == window_hour {
                expected.push(key);
            }
        }
    }
    let unnamed = format!("{prefix}/E1.readme.txt");
    emu.upload(&unnamed, b"x".to_vec()).await;
    expected.push(unnamed);
    expected.sort();

    let source = LogSource::from_config(&s3_logs(&emu, &prefix, &emu.endpoint), std::path::Path::new("unused")).await.unwrap();
    let found = source.list_window(&ten_minutes_to(window_hour * 3600 + 1800)).await.unwrap();
    let found: Vec<String> = found.iter().map(|o| o.location.to_string()).collect();
    assert_eq!(found, expected);
}

#[tokio::test]
async fn s3_objects_delivered_since_the_last_run_make_the_window_reach_back_for_their_requests() {
    use chrono::TimeDelta;
    use revokd::source::{LogSource, Window};
    // When an object was delivered comes from S3's listing (LastModified): moto stamps it at
    // upload, so the runs here are placed around the upload.
    let emu = emulator();
    let prefix = unique("cf");
    let uploaded = chrono::Utc::now();
    let played_from = uploaded.timestamp() - 40 * 60;
    let hour = chrono::DateTime::from_timestamp(played_from, 0).unwrap().format("%Y-%m-%d-%H");
    let leak = shared_session_between("leak3", 3, played_from, played_from + 600);
    emu.upload(&format!("{prefix}/E1EXAMPLE.{hour}.0001.gz"), gzip(&log_text(&leak))).await;
    let config =
        revokd::config::LogsConfig { max_delivery_delay: std::time::Duration::from_secs(3600), ..s3_logs(&emu, &prefix, &emu.endpoint) };
    let source = LogSource::from_config(&config, std::path::Path::new("unused")).await.unwrap();
    let ten_minutes = std::time::Duration::from_secs(600);

    // The last run ended 5 minutes before the upload: its requests, 40 minutes old, are read.
    let loaded = source.load_reaching_back(&Window::ending_at(uploaded, ten_minutes), uploaded - TimeDelta::minutes(5)).await.unwrap();
    assert_eq!(loaded.window.start.timestamp(), played_from);
    assert_eq!(loaded.stats.objects_delivered_late, 1);
    assert_eq!(loaded.stats.parse.rows, leak.len() as u64);

    // A run after one that followed the upload: the object was seen, the window stays.
    let later = uploaded + TimeDelta::minutes(7);
    let loaded = source.load_reaching_back(&Window::ending_at(later, ten_minutes), later - TimeDelta::minutes(5)).await.unwrap();
    assert_eq!(loaded.window, Window::ending_at(later, ten_minutes));
    assert_eq!(loaded.stats.objects_delivered_late, 0);
}

/// S3 seen through a proxy in front of moto, for what moto does not do: answer `503 Slow
/// Down` as S3 does under load, and take its time. Each request gets a connection of its own
/// (`Connection: close`) so that every one of them passes through here.
struct S3Proxy {
    endpoint: String,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    upstream: String,
    /// The first GET of each request line (the listing, each object's range) is answered 503.
    slow_down_once: bool,
    /// How long each object GET is held before it goes on to moto.
    get_delay: std::time::Duration,
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Request lines answered 503.
    failed: std::sync::Mutex<Vec<String>>,
    held: std::sync::atomic::AtomicUsize,
    /// Most object GETs held at once.
    peak_held: std::sync::atomic::AtomicUsize,
}

impl S3Proxy {
    async fn start(upstream: &str, slow_down_once: bool, get_delay: std::time::Duration) -> S3Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = upstream.trim_start_matches("http://").to_string();
        let state = std::sync::Arc::new(ProxyState { upstream, slow_down_once, get_delay, ..Default::default() });
        let proxy = S3Proxy { endpoint: format!("http://{}", listener.local_addr().unwrap()), state: state.clone() };
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(state.clone().serve(client));
            }
        });
        proxy
    }

    fn failed(&self) -> Vec<String> {
        self.state.failed.lock().unwrap().clone()
    }

    fn peak_gets(&self) -> usize {
        self.state.peak_held.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl ProxyState {
    /// One request: read its head, then answer 503 or forward it (held first if a GET).
    async fn serve(self: std::sync::Arc<Self>, mut client: tokio::net::TcpStream) {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = Vec::new();
        let head_end = loop {
            let mut chunk = [0u8; 4096];
            let n = client.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let request_line = head.lines().next().unwrap_or_default().to_string();
        let get = request_line.starts_with("GET ");
        if self.slow_down_once && get && self.seen.lock().unwrap().insert(request_line.clone()) {
            self.failed.lock().unwrap().push(request_line);
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
            let response = format!(
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(response.as_bytes()).await;
            return;
        }
        if get && !request_line.contains("list-type") {
            // Counted while held, not until the connection closes: a client may close it a
            // while after it has the whole response.
            self.peak_held.fetch_max(self.held.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            tokio::time::sleep(self.get_delay).await;
            self.held.fetch_sub(1, Ordering::SeqCst);
        }
        let mut forwarded: String = head
            .lines()
            .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("connection:"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        forwarded.push_str("Connection: close\r\n\r\n");
        if let Ok(mut server) = tokio::net::TcpStream::connect(&self.upstream).await
            && server.write_all(forwarded.as_bytes()).await.is_ok()
            && server.write_all(&buf[head_end..]).await.is_ok()
        {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
    }
}

/// `count` small log objects of the 10:00 hour under a new prefix; the prefix and their lines.
async fn upload_objects(emu: &Emulator, count: usize) -> (String, u64) {
    let prefix = unique("cf");
    let mut lines_uploaded = 0;
    for i in 0..count {
        let session = format!("s{i}");
        let lines = viewer(&session, "203.0.113.9", "Mozilla/5.0 Chrome/131.0").lines();
        lines_uploaded += lines.len() as u64;
        emu.upload(&format!("{prefix}/E1.2026-11-20-10.{i:04}.gz"), gzip(&log_text(&lines))).await;
    }
    (prefix, lines_uploaded)
}

/// Logs under `prefix` in the emulator's bucket, read through `endpoint`: every distribution,
/// two objects at a time, no retries, no parse cache.
fn s3_logs(emu: &Emulator, prefix: &str, endpoint: &str) -> revokd::config::LogsConfig {
    revokd::config::LogsConfig {
        location: revokd::config::LogLocation::S3 { bucket: emu.bucket.clone(), prefix: prefix.to_string() },
        distribution_ids: vec![],
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.to_string()),
        allow_http: true,
        max_request_duration: std::time::Duration::ZERO,
        max_delivery_delay: std::time::Duration::ZERO,
        max_concurrent_fetches: 2,
        max_retries: 0,
        cache: false,
    }
}

/// A log source for `config` with `max_retries` retries per S3 request.
async fn with_retries(config: revokd::config::LogsConfig, max_retries: usize) -> revokd::source::LogSource {
    let config = revokd::config::LogsConfig { max_retries, ..config };
    revokd::source::LogSource::from_config(&config, std::path::Path::new("unused")).await.unwrap()
}

fn ten_minutes_to(end: i64) -> revokd::source::Window {
    revokd::source::Window::ending_at(chrono::DateTime::from_timestamp(end, 0).unwrap(), std::time::Duration::from_secs(600))
}

/// S3 asks clients to slow down (503) under load, and a request can fail for a moment for
/// other reasons: each is retried with backoff up to `logs.max_retries`, so a run still reads
/// every object; without retries the same fault fails the run naming what it was reading.
#[tokio::test]
async fn transient_s3_errors_are_retried_and_every_object_is_still_read() {
    let emu = emulator();
    let (prefix, lines_uploaded) = upload_objects(&emu, 3).await;
    let window = ten_minutes_to(T0 + 600);

    let proxy = S3Proxy::start(&emu.endpoint, true, std::time::Duration::ZERO).await;
    let loaded = with_retries(s3_logs(&emu, &prefix, &proxy.endpoint), 3).await.load(&window).await.expect("every fault retried");
    assert_eq!(loaded.stats.objects, 3);
    assert_eq!(loaded.stats.parse.lines, lines_uploaded, "every line of every object read");
    let failed = proxy.failed();
    let object_gets = failed.iter().filter(|l| !l.contains("list-type")).count();
    assert!(failed.iter().any(|l| l.contains("list-type")), "the listing was failed once too: {failed:?}");
    assert_eq!(object_gets, 3, "each object's first GET was answered 503: {failed:?}");

    let proxy = S3Proxy::start(&emu.endpoint, true, std::time::Duration::ZERO).await;
    let error = with_retries(s3_logs(&emu, &prefix, &proxy.endpoint), 0)
        .await
        .load(&window)
        .await
        .err()
        .expect("no retries: the first 503 fails the load")
        .to_string();
    assert!(error.contains("listing log objects under s3://"), "{error}");
}

/// Downloads are bounded by `logs.max_concurrent_fetches`, and use it: with each GET held
/// for a while, exactly that many are in flight at the peak.
#[tokio::test]
async fn object_downloads_run_in_parallel_up_to_the_configured_bound() {
    let emu = emulator();
    let (prefix, lines_uploaded) = upload_objects(&emu, 6).await;
    let proxy = S3Proxy::start(&emu.endpoint, false, std::time::Duration::from_millis(500)).await;
    let loaded = with_retries(s3_logs(&emu, &prefix, &proxy.endpoint), 0).await.load(&ten_minutes_to(T0 + 600)).await.unwrap();
    assert_eq!(loaded.stats.parse.lines, lines_uploaded);
    assert_eq!(proxy.peak_gets(), 2);
}

#[tokio::test]
async fn a_table_not_migrated_and_a_rule_group_not_found_are_named_with_what_to_check() {
    let emu = emulator();
    let work = Workdir::new();
    let (table, group) = (unique("never-migrated"), unique("revokd"));
    let group_id = emu.rule_group(&group, 1000).await;
    work.write("revokd.toml", &emu.config(&unique("cf"), &table, &group, &group_id, ""));

    let out = work.revokd(&["revoke", "abc", "--config", "revokd.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&table) && stderr.contains("`revokd migrate` creates it"), "{stderr}");

    work.ok(&["migrate", "--config", "revokd.toml"]);
    work.write("revokd.toml", &emu.config(&unique("cf"), &table, &unique("no-such-group"), &group_id, ""));
    let out = work.revokd(&["revoke", "abc", "--config", "revokd.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GetRuleGroup") && stderr.contains("check `enforcer.wafv2`"), "{stderr}");
}
