//! Parse once: runs that read most objects from the parse cache decide exactly as a cold run
//! over the same files does, as log objects arrive (late ones included).

mod common;

use std::path::Path;

use chrono::DateTime;
use revokd::analysis::{Analyzer, DetectionQuery, SessionScore};
use revokd::config::{LogLocation, LogsConfig};
use revokd::sim::{self, Scenario, logfile::LogFileOptions};
use revokd::source::{LogSource, Window};

fn logs_config(dir: &Path, cache: bool) -> LogsConfig {
    LogsConfig {
        location: LogLocation::Local(dir.to_path_buf()),
        distribution_ids: vec![],
        region: None,
        endpoint: None,
        allow_http: false,
        max_request_duration: std::time::Duration::from_secs(300),
        max_delivery_delay: std::time::Duration::from_secs(3600),
        max_concurrent_fetches: 4,
        max_retries: 0,
        cache,
    }
}

async fn decide(source: &LogSource, analyzer: &Analyzer, now: i64) -> (Vec<SessionScore>, revokd::source::SourceStats) {
    let window = Window::ending_at(DateTime::from_timestamp(now, 0).unwrap(), std::time::Duration::from_secs(600));
    let logs = source.load(&window).await.unwrap();
    let scores = analyzer.analyse(logs.batches, &window).await.unwrap();
    logs.cache_writes.wait().await;
    (scores, logs.stats)
}

#[tokio::test]
async fn cached_incremental_runs_decide_exactly_as_cold_runs() {
    let scenario = Scenario { seed: 5, start: common::T0, duration_s: 2400, honest_sessions: 80, leaks: 4, restreamers: 1, market: "US" };
    let mut traffic = sim::generate(&scenario);
    let all = std::mem::take(&mut traffic.requests);
    // CloudFront delivers every 5 minutes; a few lines of 10:05-10:10 arrive 15 minutes late.
    let staging = tempfile::tempdir().unwrap();
    let mut deliveries: Vec<(i64, std::path::PathBuf)> = Vec::new();
    for k in 0..8i64 {
        let (from, to) = (common::T0 + 300 * k, common::T0 + 300 * (k + 1));
        let mut part: Vec<_> = all.iter().filter(|r| (r.ts as i64) >= from && (r.ts as i64) < to).copied().collect();
        let late: Vec<_> = if k == 1 { part.split_off(part.len() - part.len() / 20) } else { vec![] };
        for (lines, arrives, tag) in [(part, to, "on-time"), (late, to + 900, "late")] {
            if lines.is_empty() {
                continue;
            }
            traffic.requests = lines;
            let dir = staging.path().join(format!("{k}-{tag}"));
            let options = LogFileOptions { late_share: 0.0, seed: k as u64 * 10 + u64::from(tag == "late"), ..Default::default() };
            for f in sim::logfile::write_files(&traffic, &dir, "", &options).unwrap() {
                deliveries.push((arrives, f));
            }
        }
    }
    let live = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let cached = LogSource::from_config(&logs_config(live.path(), true), state.path()).await.unwrap();
    let cold = LogSource::from_config(&logs_config(live.path(), false), state.path()).await.unwrap();
    let query = DetectionQuery::builtin("default");
    let params = query.bind_params(&Default::default()).unwrap();
    let analyzer = Analyzer::new(query, params);

    let mut flagged_somewhere = false;
    let mut cache_hits = 0;
    for now in (common::T0 + 600..=common::T0 + 2400).step_by(300) {
        for (arrives, file) in &deliveries {
            let target = live.path().join(file.file_name().unwrap());
            if *arrives <= now && !target.exists() {
                std::fs::copy(file, target).unwrap();
            }
        }
        let (incremental, stats) = decide(&cached, &analyzer, now).await;
        let (reference, _) = decide(&cold, &analyzer, now).await;
        cache_hits += stats.objects_from_cache;
        assert_eq!(incremental.len(), reference.len(), "run at +{}s: sessions", now - common::T0);
        for (a, b) in incremental.iter().zip(&reference) {
            assert_eq!((&a.session_id, a.flagged), (&b.session_id, b.flagged), "run at +{}s", now - common::T0);
            assert!((a.score.unwrap_or(-1.0) - b.score.unwrap_or(-1.0)).abs() < 1e-9, "{} at +{}s", a.session_id, now - common::T0);
            assert_eq!(a.reasons, b.reasons);
        }
        flagged_somewhere |= incremental.iter().any(|s| s.flagged);
    }
    assert!(cache_hits > 10, "later runs read earlier objects from the cache ({cache_hits} hits)");
    assert!(flagged_somewhere, "the comparison covers flagged sessions");
}

#[tokio::test]
async fn a_corrupt_or_missing_cache_file_is_rebuilt_from_the_object() {
    let scenario = Scenario { seed: 6, start: common::T0, duration_s: 600, honest_sessions: 30, leaks: 1, restreamers: 0, market: "US" };
    let traffic = sim::generate(&scenario);
    let logs = tempfile::tempdir().unwrap();
    sim::logfile::write_files(&traffic, logs.path(), "", &LogFileOptions { late_share: 0.0, ..Default::default() }).unwrap();
    let state = tempfile::tempdir().unwrap();
    let source = LogSource::from_config(&logs_config(logs.path(), true), state.path()).await.unwrap();
    let query = DetectionQuery::builtin("default");
    let params = query.bind_params(&Default::default()).unwrap();
    let analyzer = Analyzer::new(query, params);
    let now = common::T0 + 600;

    let (first, stats) = decide(&source, &analyzer, now).await;
    assert_eq!((stats.objects_parsed, stats.objects_from_cache), (stats.objects, 0));
    let cache_files: Vec<_> = std::fs::read_dir(state.path().join("cache")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(cache_files.len() as u64, stats.objects);

    // Survives a restart (a new source on the same state), then one file corrupt, one gone.
    let source = LogSource::from_config(&logs_config(logs.path(), true), state.path()).await.unwrap();
    let (_, stats) = decide(&source, &analyzer, now).await;
    assert_eq!(stats.objects_from_cache, stats.objects);
    std::fs::write(&cache_files[0], b"not parquet").unwrap();
    if cache_files.len() > 1 {
        std::fs::remove_file(&cache_files[1]).unwrap();
    }
    let (again, stats) = decide(&source, &analyzer, now).await;
    assert_eq!(stats.objects_parsed, cache_files.len().min(2) as u64);
    assert_eq!(again, first, "same decisions from rebuilt cache files");
}

#[tokio::test]
async fn cache_files_of_hours_before_the_window_are_pruned() {
    let scenario = Scenario { seed: 7, start: common::T0, duration_s: 7200, honest_sessions: 20, leaks: 0, restreamers: 0, market: "US" };
    let traffic = sim::generate(&scenario);
    let logs = tempfile::tempdir().unwrap();
    sim::logfile::write_files(&traffic, logs.path(), "", &LogFileOptions { late_share: 0.0, files_per_hour: 1, ..Default::default() })
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let source = LogSource::from_config(&logs_config(logs.path(), true), state.path()).await.unwrap();
    let count = || std::fs::read_dir(state.path().join("cache")).map_or(0, |d| d.count());
    let window = |end: i64| Window::ending_at(DateTime::from_timestamp(end, 0).unwrap(), std::time::Duration::from_secs(600));
    source.load(&window(common::T0 + 3600)).await.unwrap().cache_writes.wait().await;
    assert_eq!(count(), 1, "10:50-11:00 needs the 10:00 file only");
    source.load(&window(common::T0 + 3900)).await.unwrap().cache_writes.wait().await;
    assert_eq!(count(), 2, "10:55-11:05 needs both hours");
    // A run of the present may reach back max_delivery_delay (1 h here) for late deliveries.
    source.load(&window(common::T0 + 7200)).await.unwrap().cache_writes.wait().await;
    assert_eq!(count(), 2, "11:50-12:00, reaching back to 11:00: the 10:00 file may hold lines up to 11:05");
    source.load(&window(common::T0 + 10800)).await.unwrap().cache_writes.wait().await;
    assert_eq!(count(), 1, "12:50-13:00, reaching back to 12:00: the 10:00 file is pruned, the 11:00 one kept");
}

/// Rows of `batches` whose request time falls in `window`.
fn rows_in(batches: &[arrow::array::RecordBatch], window: &Window) -> usize {
    let (from, to) = (window.start.timestamp(), window.end.timestamp());
    batches
        .iter()
        .map(|batch| {
            let times = batch.column_by_name("epoch_s").unwrap().as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
            times.values().iter().filter(|t| (from..to).contains(*t)).count()
        })
        .sum()
}

#[tokio::test]
async fn a_run_that_reaches_back_for_a_late_file_reads_each_request_once() {
    // Half an hour of one hour's traffic in one file, delivered before the last run (which
    // analysed 10:15-10:25); a quarter of 10:05-10:10 comes in a second file after it.
    let scenario = Scenario { seed: 8, start: common::T0, duration_s: 1800, honest_sessions: 60, leaks: 1, restreamers: 0, market: "US" };
    let mut traffic = sim::generate(&scenario);
    let (late, on_time): (Vec<_>, Vec<_>) = std::mem::take(&mut traffic.requests)
        .into_iter()
        .enumerate()
        .partition(|(i, r)| (common::T0 + 300..common::T0 + 600).contains(&(r.ts as i64)) && i % 4 == 0);
    let at = |t: i64| std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t as u64);
    let last_run_end = common::T0 + 1500;
    let staging = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (requests, delivered, seed) in [(on_time, last_run_end - 300, 1), (late, last_run_end + 240, 2)] {
        traffic.requests = requests.into_iter().map(|(_, r)| r).collect();
        let dir = staging.path().join(seed.to_string());
        let options = LogFileOptions { late_share: 0.0, files_per_hour: 1, seed, ..Default::default() };
        let written = sim::logfile::write_files(&traffic, &dir, "", &options).unwrap();
        files.extend(written.into_iter().map(|f| (f, delivered)));
    }
    let window = Window::ending_at(DateTime::from_timestamp(common::T0 + 1800, 0).unwrap(), std::time::Duration::from_secs(600));
    let since = DateTime::from_timestamp(last_run_end, 0).unwrap();

    for cache in [true, false] {
        let (logs, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let deliver = |delivered_by: i64| {
            for (file, delivered) in files.iter().filter(|(_, delivered)| *delivered <= delivered_by) {
                let target = logs.path().join(file.file_name().unwrap());
                std::fs::copy(file, &target).unwrap();
                std::fs::File::options().write(true).open(&target).unwrap().set_modified(at(*delivered)).unwrap();
            }
        };
        let source = LogSource::from_config(&logs_config(logs.path(), cache), state.path()).await.unwrap();
        // The last run, which leaves the on-time file in the parse cache.
        deliver(last_run_end);
        let previous = Window::ending_at(since, std::time::Duration::from_secs(600));
        source.load(&previous).await.unwrap().cache_writes.wait().await;
        deliver(i64::MAX);

        let loaded = source.load_reaching_back(&window, since).await.unwrap();
        loaded.cache_writes.wait().await;
        assert!(loaded.window.start < window.start - chrono::TimeDelta::minutes(10), "cache {cache}: reached {:?}", loaded.window);
        assert_eq!(loaded.stats.objects_delivered_late, 1);
        let cold = LogSource::from_config(&logs_config(logs.path(), false), state.path()).await.unwrap();
        let every_request_once = rows_in(&cold.load(&loaded.window).await.unwrap().batches, &loaded.window);
        assert!(every_request_once > 10_000, "{every_request_once} requests");
        assert_eq!(rows_in(&loaded.batches, &loaded.window), every_request_once, "cache {cache}: requests read");
    }
}
