//! revokd-bench: generates realistic CloudFront logs with known leaked sessions, and runs the
//! benchmarks that back the README's figures.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use revokd::sim::{self, Scenario, Truth, logfile::LogFileOptions};

#[derive(Parser)]
#[command(name = "revokd-bench", about = "Traffic generator and benchmarks for revokd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write CloudFront log files (gzip, named as CloudFront names them) and a ground-truth JSON.
    Generate {
        /// Directory to write into: logs under <out>/<prefix>/, the truth in <out>/truth.json.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "logs")]
        prefix: String,
        /// First request time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        start: DateTime<Utc>,
        /// Length of traffic, e.g. 30m or 1h.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        duration: std::time::Duration,
        /// Honest sessions playing during the period.
        #[arg(long, default_value_t = 200)]
        sessions: usize,
        #[arg(long, default_value_t = 5)]
        leaks: usize,
        #[arg(long, default_value_t = 2)]
        restreamers: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "E2REVOKDSAMPLE")]
        distribution: String,
        /// Where to write the ground truth (default: <out>/truth.json).
        #[arg(long)]
        truth: Option<PathBuf>,
    },
    /// Detection quality: replays simulated traffic as the daemon would (a run every
    /// --interval over --lookback) through the default detection and the reference scoring,
    /// and prints precision, recall, honest sessions blocked by behaviour and time to revoke.
    Detection {
        /// Seeds to simulate; figures are over all of them.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5")]
        seeds: Vec<u64>,
        #[arg(long, default_value = "2h", value_parser = parse_duration)]
        duration: std::time::Duration,
        /// Honest sessions per seed.
        #[arg(long, default_value_t = 2500)]
        sessions: usize,
        /// Leaked tokens per seed.
        #[arg(long, default_value_t = 30)]
        leaks: usize,
        /// Restreamers per seed.
        #[arg(long, default_value_t = 8)]
        restreamers: usize,
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        interval: std::time::Duration,
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        lookback: std::time::Duration,
        /// Queries to compare: built-in names or .sql paths.
        #[arg(long, value_delimiter = ',', default_value = "default,reference")]
        queries: Vec<String>,
        /// Override a parameter of every query that declares it: name=value.
        #[arg(long = "param")]
        params: Vec<String>,
        /// Also list honest sessions blocked and leaks revoked late or never.
        #[arg(long)]
        verbose: bool,
        /// Print these sessions' score and reasons at every run.
        #[arg(long, value_delimiter = ',')]
        trace: Vec<String>,
    },
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    revokd::config::parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Detection { seeds, duration, sessions, leaks, restreamers, interval, lookback, queries, params, verbose, trace } => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            match runtime.block_on(detection(DetectionArgs {
                seeds,
                duration_s: duration.as_secs() as i64,
                sessions,
                leaks,
                restreamers,
                interval_s: interval.as_secs() as i64,
                lookback_s: lookback.as_secs() as i64,
                queries,
                params,
                verbose,
                trace,
            })) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("revokd-bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Generate { out, prefix, start, duration, sessions, leaks, restreamers, seed, distribution, truth } => {
            let scenario = Scenario {
                seed,
                start: start.timestamp(),
                duration_s: duration.as_secs() as i64,
                honest_sessions: sessions,
                leaks,
                restreamers,
                market: "US",
            };
            let traffic = sim::generate(&scenario);
            let options = LogFileOptions { distribution, seed, ..Default::default() };
            let files = match sim::logfile::write_files(&traffic, &out, &prefix, &options) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("revokd-bench: writing logs under {}: {e}", out.display());
                    return ExitCode::FAILURE;
                }
            };
            let truth_path = truth.unwrap_or_else(|| out.join("truth.json"));
            let truth_json: Vec<serde_json::Value> = traffic
                .sessions
                .iter()
                .filter(|s| traffic.requests.iter().any(|r| traffic.sessions[r.session as usize].session_id == s.session_id))
                .map(|s| {
                    let (kind, detail) = match &s.truth {
                        Truth::Honest(b) => ("honest", serde_json::json!({ "behaviour": b.name() })),
                        Truth::Leak { peak_viewers, reaches_3_at, shared_from, shared_until } => (
                            "leak",
                            serde_json::json!({
                                "peak_viewers": peak_viewers,
                                "reaches_3_at": reaches_3_at,
                                "shared_from": shared_from,
                                "shared_until": shared_until,
                            }),
                        ),
                        Truth::Restreamer => ("restreamer", serde_json::json!({})),
                    };
                    serde_json::json!({ "session_id": s.session_id, "kind": kind, "live": s.live, "detail": detail })
                })
                .collect();
            if let Err(e) = std::fs::write(&truth_path, serde_json::to_vec_pretty(&truth_json).expect("json")) {
                eprintln!("revokd-bench: writing {}: {e}", truth_path.display());
                return ExitCode::FAILURE;
            }
            println!(
                "wrote {} files, {} requests, {} sessions ({} leaked, {} restreamers) under {}; truth in {}",
                files.len(),
                traffic.requests.len(),
                truth_json.len(),
                leaks,
                restreamers,
                out.display(),
                truth_path.display()
            );
            ExitCode::SUCCESS
        }
    }
}

struct DetectionArgs {
    seeds: Vec<u64>,
    duration_s: i64,
    sessions: usize,
    leaks: usize,
    restreamers: usize,
    interval_s: i64,
    lookback_s: i64,
    queries: Vec<String>,
    params: Vec<String>,
    verbose: bool,
    trace: Vec<String>,
}

async fn detection(args: DetectionArgs) -> Result<(), String> {
    use revokd::analysis::{Analyzer, DetectionQuery};
    use revokd::sim::replay::{Evaluation, MinuteBatches, ReplayOptions, replay};

    let mut analyzers = Vec::new();
    for name in &args.queries {
        let query = DetectionQuery::resolve(name, std::path::Path::new(".")).map_err(|e| e.to_string())?;
        let mut overrides = std::collections::BTreeMap::new();
        for p in &args.params {
            let (k, v) = p.split_once('=').ok_or_else(|| format!("--param {p}: expected name=value"))?;
            if query.declared.contains_key(k) {
                let value = v.parse::<i64>().map(toml::Value::Integer)
                    .or_else(|_| v.parse::<f64>().map(toml::Value::Float))
                    .unwrap_or_else(|_| toml::Value::String(v.to_string()));
                overrides.insert(k.to_string(), value);
            }
        }
        let params = query.bind_params(&overrides).map_err(|(k, m)| format!("--param {k}: {m}"))?;
        analyzers.push((name.clone(), Analyzer::new(query, params)));
    }
    let options = ReplayOptions { interval_s: args.interval_s, lookback_s: args.lookback_s };
    let mut evaluations: Vec<Evaluation> = vec![Evaluation::default(); analyzers.len()];
    let mut requests = 0;
    for &seed in &args.seeds {
        let scenario = Scenario {
            seed,
            start: 1_795_168_800, // 2026-11-20T10:00:00Z
            duration_s: args.duration_s,
            honest_sessions: args.sessions,
            leaks: args.leaks,
            restreamers: args.restreamers,
            market: "US",
        };
        let traffic = sim::generate(&scenario);
        requests += traffic.requests.len();
        let batches = MinuteBatches::new(&traffic);
        let runs = replay(&traffic, &batches, &analyzers, options, &args.trace).await.map_err(|e| e.to_string())?;
        for r in &runs {
            for (id, t, score) in &r.traces {
                let truth = traffic.truth_of(id).map(|s| format!("{:?}", s.truth)).unwrap_or_default();
                println!("trace {} {id} @{}: score {:?} flagged {} {truth}\n    {:?}\n    {:?}", r.name, t - scenario.start, score.score, score.flagged, score.reasons, score.signals);
            }
        }
        for (evaluation, runs) in evaluations.iter_mut().zip(&runs) {
            evaluation.add(&traffic, runs, args.interval_s);
        }
        eprintln!("seed {seed}: {} sessions, {} requests replayed", traffic.sessions.len(), traffic.requests.len());
    }
    print_detection(&args, &evaluations, requests);
    Ok(())
}

fn print_detection(args: &DetectionArgs, evaluations: &[revokd::sim::replay::Evaluation], requests: usize) {
    let names: Vec<&str> = args.queries.iter().map(String::as_str).collect();
    let row = |label: &str, cells: Vec<String>| {
        print!("{label:<34}");
        for c in cells {
            print!("{c:>22}");
        }
        println!();
    };
    println!(
        "detection benchmark: seeds {:?}, {} h each, {} honest sessions + {} leaks + {} restreamers per seed, {} requests;",
        args.seeds,
        args.duration_s as f64 / 3600.0,
        args.sessions,
        args.leaks,
        args.restreamers,
        requests
    );
    println!("a run every {} s over the last {} s, as the daemon does", args.interval_s, args.lookback_s);
    println!();
    row("", names.iter().map(|n| n.to_string()).collect());
    row("precision", evaluations.iter().map(|e| format!("{:.4}", e.precision())).collect());
    row("recall", evaluations.iter().map(|e| format!("{:.4}", e.recall())).collect());
    row("  leaks caught", evaluations.iter().map(|e| format!("{}/{}", e.leaks_caught, e.leaks)).collect());
    row("  restreamers caught", evaluations.iter().map(|e| format!("{}/{}", e.restreamers_caught, e.restreamers)).collect());
    row("honest sessions blocked", evaluations.iter().map(|e| {
        let (b, t): (usize, usize) = e.honest.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
        format!("{b}/{t} ({:.2}%)", 100.0 * b as f64 / t.max(1) as f64)
    }).collect());
    if let Some(first) = evaluations.first() {
        for behaviour in first.honest.keys() {
            row(&format!("  {}", behaviour.name()), evaluations.iter().map(|e| {
                let (b, t) = e.honest.get(behaviour).copied().unwrap_or_default();
                format!("{b}/{t} ({:.2}%)", 100.0 * b as f64 / t.max(1) as f64)
            }).collect());
        }
    }
    row("worst behaviour blocked", evaluations.iter().map(|e| {
        let (b, share) = e.worst_honest_share();
        format!("{:.2}% {}", share * 100.0, b.name())
    }).collect());
    row("leaks reaching 3 viewers", evaluations.iter().map(|e| e.latencies.len().to_string()).collect());
    row("  revoked within one run", evaluations.iter().map(|e| format!("{:.1}%", e.within_one_run() * 100.0)).collect());
    let secs = |v: Option<i64>| v.map_or("never".to_string(), |s| format!("{s} s"));
    row("  time to revoke, median", evaluations.iter().map(|e| secs(e.latency_percentile(0.5))).collect());
    row("  time to revoke, p95", evaluations.iter().map(|e| secs(e.latency_percentile(0.95))).collect());
    row("  time to revoke, max", evaluations.iter().map(|e| secs(e.latency_percentile(1.0))).collect());
    row("analysis per run, median", evaluations.iter().map(|e| {
        let mut v = e.analyse_ms.clone();
        v.sort_by(f64::total_cmp);
        format!("{:.0} ms", v.get(v.len() / 2).copied().unwrap_or(0.0))
    }).collect());
    if args.verbose {
        for (name, e) in names.iter().zip(evaluations) {
            for (b, id) in &e.false_positive_examples {
                println!("{name}: honest {} blocked: {id}", b.name());
            }
            for (id, live, peak, late) in &e.slow_leaks {
                let kind = if *live { "live" } else { "vod" };
                println!("{name}: leak {id} ({kind}, peak {peak} viewers) revoked {}", late.map_or("never".into(), |l| format!("{l} s after reaching 3 viewers")));
            }
        }
    }
}
