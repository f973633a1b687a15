//! revokd-bench: generates realistic CloudFront logs with known leaked sessions, and runs the
//! benchmarks that back the README's figures.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use revokd::sim::{self, Scenario, Truth, logfile::LogFileOptions};

mod detection;
mod speed;

use detection::DetectionArgs;

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
        /// Directory to write into: logs under OUT/PREFIX/, the truth in OUT/truth.json.
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
        /// Where to write the ground truth (default: OUT/truth.json).
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
        /// Model CloudFront's log delivery: each 10-minute file delivered MIN..MAX after its
        /// period (e.g. `10m..40m`). Without it, every request's log is there at once.
        #[arg(long, value_parser = parse_duration_range)]
        delivery_delay: Option<(std::time::Duration, std::time::Duration)>,
        /// With --delivery-delay: how far back a run reaches for late files, as
        /// `logs.max_delivery_delay` (`0s`: never).
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        max_delivery_delay: std::time::Duration,
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
    /// Speed: revokd's cold run over an hour of gzip logs against DuckDB running the reference
    /// scoring and against inflating the same files in parallel (the floor), measured in the
    /// same run on the same files; then a run finding one new minute with the cache warm.
    /// Run it on release builds: cargo build --release --bins.
    Speed {
        /// Log lines to generate (an hour of traffic, gzip files as CloudFront names them).
        #[arg(long, default_value_t = 2_000_000)]
        lines: usize,
        /// Working directory (logs are generated once and reused).
        #[arg(long, default_value = "target/speed-bench/data")]
        dir: PathBuf,
        /// Threads for the floor and DuckDB (revokd uses all cores); default: all cores.
        #[arg(long)]
        threads: Option<usize>,
        /// Rounds: each measures every command once; each command keeps its fastest round.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// The process behind the speed benchmark's scheduled run: opens revokd's runtime once,
    /// as `revokd daemon` does, and runs once (a dry run) at each --now in turn, reading a
    /// line on stdin before each run but the first. Prints a JSON line per run: wall and CPU
    /// seconds, and the run's report.
    ScheduledRuns {
        #[arg(long)]
        config: PathBuf,
        /// When each run happens (RFC 3339), in order.
        #[arg(long = "now", value_parser = parse_time, required = true)]
        times: Vec<DateTime<Utc>>,
    },
    /// Where a run spends its time: reads the logs of a config's window (timing the read),
    /// then prints each statement of its detection query as DataFusion ran it, operator by
    /// operator, with rows and time.
    Profile {
        #[arg(long)]
        config: PathBuf,
        /// Analyse as if it were this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        now: DateTime<Utc>,
    },
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    revokd::config::parse_duration(s)
}

/// `MIN..MAX`, two durations.
fn parse_duration_range(s: &str) -> Result<(std::time::Duration, std::time::Duration), String> {
    let (min, max) = s.split_once("..").ok_or_else(|| format!("`{s}`: expected MIN..MAX, e.g. 10m..40m"))?;
    let (min, max) = (parse_duration(min)?, parse_duration(max)?);
    if min > max {
        return Err(format!("`{s}`: MIN is longer than MAX"));
    }
    Ok((min, max))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Profile { config, now } => match profile(&config, now) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("revokd-bench profile: {e}");
                ExitCode::FAILURE
            }
        },
        Command::ScheduledRuns { config, times } => match speed::scheduled_runs(&config, &times) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("revokd-bench scheduled-runs: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Speed { lines, dir, threads, repeat } => {
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
            let dir = std::path::absolute(&dir).unwrap_or(dir);
            match speed::speed(speed::SpeedArgs { lines, dir, threads, repeat }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("revokd-bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Detection {
            seeds,
            duration,
            sessions,
            leaks,
            restreamers,
            interval,
            lookback,
            delivery_delay,
            max_delivery_delay,
            queries,
            params,
            verbose,
            trace,
        } => {
            // As revokd refuses such a schedule: the requests between runs would go unseen,
            // and the figures would measure the gaps, not the detection.
            if lookback < interval {
                eprintln!(
                    "revokd-bench: --lookback must be at least --interval: runs every {interval:?} over {lookback:?} leave requests unanalysed"
                );
                return ExitCode::from(2);
            }
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            match runtime.block_on(detection::detection(DetectionArgs {
                seeds,
                duration_s: duration.as_secs() as i64,
                sessions,
                leaks,
                restreamers,
                interval_s: interval.as_secs() as i64,
                lookback_s: lookback.as_secs() as i64,
                delivery: delivery_delay.map(|(min, max)| revokd::sim::replay::Delivery {
                    min_delay_s: min.as_secs() as i64,
                    max_delay_s: max.as_secs() as i64,
                    max_delivery_delay_s: max_delivery_delay.as_secs() as i64,
                }),
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

fn profile(config: &std::path::Path, now: DateTime<Utc>) -> Result<(), String> {
    let config = revokd::config::Config::load(Some(config)).map_err(|e| e.to_string())?;
    // Shows the time of each statement that materialises a table.
    tracing_subscriber::fmt().with_env_filter("revokd::analysis=debug").with_writer(std::io::stdout).init();
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let source = revokd::source::LogSource::from_config(&config.logs, &config.state_dir).await.map_err(|e| e.to_string())?;
        let analyzer = revokd::analysis::Analyzer::new(config.detection.query.clone(), config.detection.params.clone());
        let window = revokd::source::Window::ending_at(now, config.schedule.lookback);
        let started = std::time::Instant::now();
        let logs = source.load(&window).await.map_err(|e| e.to_string())?;
        println!(
            "read: {:.2} s, {} objects ({} parsed, {} from cache) of {} rows, {} rows loaded (cached row groups outside the window skipped)",
            started.elapsed().as_secs_f64(),
            logs.stats.objects,
            logs.stats.objects_parsed,
            logs.stats.objects_from_cache,
            logs.stats.parse.rows,
            logs.batches.iter().map(|b| b.num_rows()).sum::<usize>()
        );
        let started = std::time::Instant::now();
        let plan = analyzer.explain_analyze(logs.batches, &window).await.map_err(|e| e.to_string())?;
        let analysed = started.elapsed();
        logs.cache_writes.wait().await;
        println!(
            "analysis, every statement with its operators' metrics: {:.2} s, then {:.2} s more for the cache writes\n{plan}",
            analysed.as_secs_f64(),
            (started.elapsed() - analysed).as_secs_f64()
        );
        Ok(())
    })
}
