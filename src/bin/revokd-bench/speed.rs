//! `revokd-bench speed`: revokd's cold run over an hour of logs against DuckDB running the
//! reference scoring and against the decompression floor, on the same files in the same run;
//! then the incremental case the daemon lives in (cache warm, one new minute of logs).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use revokd::sim::{self, Scenario, logfile::LogFileOptions};

pub struct SpeedArgs {
    pub lines: usize,
    pub dir: PathBuf,
    pub threads: usize,
    pub repeat: usize,
}

impl SpeedArgs {
    /// The hour of logs but its last minute.
    fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// The last minute, held back as the incremental run's new object.
    fn new_minute(&self) -> PathBuf {
        self.dir.join("new-minute")
    }
}

/// 2026-11-20T10:00:00Z
const START: i64 = 1_795_168_800;
const HOUR: i64 = 3600;
/// Requests per honest session-hour in the simulator, to size the population.
const REQUESTS_PER_SESSION_HOUR: usize = 420;

struct Measurement {
    wall: Duration,
    /// User plus system time of the command's process: what a run costs the machine, on
    /// every core, whatever else it shares the machine with.
    cpu: Option<Duration>,
    peak_rss_kib: Option<u64>,
}

/// Runs a command to completion; wall time and peak RSS (from the kernel's rusage).
fn measure(cmd: &mut Command) -> Result<Measurement, String> {
    let started = Instant::now();
    let child = cmd.spawn().map_err(|e| format!("starting {cmd:?}: {e}"))?;
    reap(child, started, &format!("{cmd:?}"))
}

/// Waits for a child to exit: wall time since `started`, its CPU time and peak RSS.
fn reap(child: std::process::Child, started: Instant, what: &str) -> Result<Measurement, String> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value, and wait4 writes only into the two locals
    // it is given, for the child this process spawned.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    if waited != pid {
        return Err(format!("waiting for {what}: {}", std::io::Error::last_os_error()));
    }
    std::mem::forget(child); // reaped above
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!("{what} failed (status {status})"));
    }
    let cpu = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    Ok(Measurement { wall, cpu: Some(cpu), peak_rss_kib: Some(usage.ru_maxrss as u64) })
}

fn seconds(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// One command's measurements, one per round.
#[derive(Default)]
struct Runs(Vec<Measurement>);

impl Runs {
    fn add(&mut self, m: Measurement) {
        self.0.push(m);
    }

    /// The fastest round: the least disturbed by whatever else the machine was doing.
    fn best(&self) -> &Measurement {
        self.0.iter().min_by_key(|m| m.wall).expect("measured at least once")
    }

    /// The lowest and highest peak RSS over the rounds, in MiB.
    fn peak_rss_range_mib(&self) -> (f64, f64) {
        let peaks = self.0.iter().filter_map(|m| m.peak_rss_kib);
        let (lo, hi) = (peaks.clone().min().unwrap_or(0), peaks.max().unwrap_or(0));
        (lo as f64 / 1024.0, hi as f64 / 1024.0)
    }

    /// The lowest and highest ratio of this command's wall time to `other`'s, round by round.
    fn ratio_range(&self, other: &Runs) -> (f64, f64) {
        min_max(self.0.iter().zip(&other.0).map(|(a, b)| a.wall.as_secs_f64() / b.wall.as_secs_f64()))
    }

    /// The least CPU time of any round.
    fn least_cpu(&self) -> Option<Duration> {
        self.0.iter().filter_map(|m| m.cpu).min()
    }

    /// The ratio of the least CPU times, and its lowest and highest value round by round.
    fn cpu_ratio(&self, other: &Runs) -> Option<(f64, f64, f64)> {
        let ratio = self.least_cpu()?.as_secs_f64() / other.least_cpu()?.as_secs_f64();
        let (lo, hi) = min_max(self.0.iter().zip(&other.0).filter_map(|(a, b)| Some(a.cpu?.as_secs_f64() / b.cpu?.as_secs_f64())));
        Some((ratio, lo, hi))
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// The logs: an hour of traffic, the last minute held back as the "new minute" object.
struct Dataset {
    new_minute: PathBuf,
    files: Vec<PathBuf>,
    lines: u64,
    compressed_bytes: u64,
    inflated_bytes: u64,
}

/// Generates the logs unless `args.dir` holds them for these arguments already; true if it did.
fn generate_dataset(args: &SpeedArgs) -> Result<bool, String> {
    let (logs, new_minute) = (args.logs(), args.new_minute());
    let marker = args.dir.join("dataset.json");
    let wanted = serde_json::json!({ "lines": args.lines, "seed": 42, "format": 1 });
    let fresh = std::fs::read(&marker).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let generate = fresh.as_ref().map(|f| &f["params"]) != Some(&wanted);
    if generate {
        eprintln!("generating about {} lines of CloudFront logs under {} ...", args.lines, args.dir.display());
        let _ = std::fs::remove_dir_all(&args.dir);
        let scenario = Scenario {
            seed: 42,
            start: START,
            duration_s: HOUR,
            honest_sessions: args.lines / REQUESTS_PER_SESSION_HOUR,
            leaks: 30,
            restreamers: 10,
            market: "US",
        };
        let mut traffic = sim::generate(&scenario);
        let cut = traffic.requests.partition_point(|r| (r.ts as i64) < START + HOUR - 60);
        let last_minute = traffic.requests.split_off(cut);
        let options = LogFileOptions { distribution: "E2SPEEDBENCH".into(), ..Default::default() };
        sim::logfile::write_files(&traffic, &logs, "", &options).map_err(|e| e.to_string())?;
        traffic.requests = last_minute;
        let late = LogFileOptions { late_share: 0.0, seed: 43, ..options };
        sim::logfile::write_files(&traffic, &new_minute, "", &late).map_err(|e| e.to_string())?;
        std::fs::write(&marker, serde_json::json!({ "params": wanted }).to_string()).map_err(|e| e.to_string())?;
    }
    Ok(generate)
}

/// The generated logs, inflated once to count their lines and bytes the way the floor reads them.
fn dataset(args: &SpeedArgs) -> Result<Dataset, String> {
    let (logs, new_minute) = (args.logs(), args.new_minute());
    let list = |dir: &Path| -> Result<Vec<PathBuf>, String> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .map(|e| e.map(|e| e.path()).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        v.sort();
        Ok(v)
    };
    let mut files = list(&logs)?;
    files.extend(list(&new_minute)?);
    let compressed_bytes = files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();
    let (inflated_bytes, lines) = decompress_all(&files, 1, true)?;
    Ok(Dataset { new_minute, files, lines, compressed_bytes, inflated_bytes })
}

/// Inflates every file with `threads` threads; returns (bytes inflated, lines if counted).
fn decompress_all(files: &[PathBuf], threads: usize, count_lines: bool) -> Result<(u64, u64), String> {
    let queue = Mutex::new(files.iter());
    let totals = Mutex::new((0u64, 0u64));
    let error = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let Some(path) = queue.lock().unwrap().next() else { return };
                    let result = (|| -> std::io::Result<(u64, u64)> {
                        let file = std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(path)?);
                        let mut gz = flate2::bufread::MultiGzDecoder::new(file);
                        let (mut bytes, mut lines) = (0u64, 0u64);
                        loop {
                            let n = gz.read(&mut buf)?;
                            if n == 0 {
                                return Ok((bytes, lines));
                            }
                            bytes += n as u64;
                            if count_lines {
                                lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                            }
                        }
                    })();
                    match result {
                        Ok((b, l)) => {
                            let mut t = totals.lock().unwrap();
                            t.0 += b;
                            t.1 += l;
                        }
                        Err(e) => *error.lock().unwrap() = Some(format!("{}: {e}", path.display())),
                    }
                }
            });
        }
    });
    if let Some(e) = error.into_inner().unwrap() {
        return Err(e);
    }
    let (bytes, lines) = totals.into_inner().unwrap();
    // Each file has two header lines.
    Ok((bytes, lines.saturating_sub(2 * files.len() as u64)))
}

fn revokd_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = me.with_file_name("revokd");
    path.exists()
        .then_some(path)
        .ok_or_else(|| "revokd binary not found next to revokd-bench: build both (cargo build --release --bins)".into())
}

fn rfc3339(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0).expect("in range").to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A run's own directory, holding its config (`revokd.toml`) and state: `cold` wipes the
/// state (and parse cache) first.
fn run_dir(args: &SpeedArgs, name: &str, logs: &Path, query: &str, lookback: &str, cold: bool) -> Result<PathBuf, String> {
    let dir = args.dir.join("runs").join(name);
    if cold {
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = format!(
        "state_dir = \"state\"\n[logs]\nurl = \"{}\"\n[schedule]\nlookback = \"{lookback}\"\n[detection]\nquery = \"{query}\"\n",
        logs.display()
    );
    std::fs::write(dir.join("revokd.toml"), config).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// `revokd run` in its own state directory: `cold` wipes the state (and parse cache) first.
fn revokd_run(
    args: &SpeedArgs,
    name: &str,
    logs: &Path,
    query: &str,
    lookback: &str,
    now: i64,
    cold: bool,
) -> Result<(Measurement, serde_json::Value), String> {
    revokd_run_in(&run_dir(args, name, logs, query, lookback, cold)?, now)
}

/// `revokd run` (a dry run, as of `now`) in a directory `run_dir` made.
fn revokd_run_in(dir: &Path, now: i64) -> Result<(Measurement, serde_json::Value), String> {
    let m = measure(
        Command::new(revokd_binary()?)
            .args([
                "run",
                "--config",
                "revokd.toml",
                "--now",
                &rfc3339(now),
                "--dry-run",
                "--report",
                "report.json",
                "--log-format",
                "json",
            ])
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::null()),
    )?;
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    Ok((m, report))
}

/// The daemon's steady state as the daemon lives it. The cache is filled first, as for the
/// incremental run; then one process, opened once as `revokd daemon` opens it, runs the
/// scheduled run of the minute before and, once the new object is there, the measured one.
/// `revokd run` in a process of its own also pays for starting (loading the binary, the
/// runtime, the store) and for its first run's cold caches. Wall and CPU time are the
/// measured run's; the peak RSS is the process's, both runs'.
fn scheduled_run(args: &SpeedArgs, logs: &Path, older: &[PathBuf], all: &[PathBuf], end: i64) -> Result<Measurement, String> {
    use std::io::{BufRead, Write};
    link_all(logs, older)?;
    let dir = run_dir(args, "scheduled", logs, "default", "10m", true)?;
    revokd_run_in(&dir, end - 60)?;
    let what = "revokd-bench scheduled-runs";
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["scheduled-runs", "--config", "revokd.toml", "--now", &rfc3339(end - 60), "--now", &rfc3339(end)])
        .current_dir(&dir)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {what}: {e}"))?;
    let mut input = child.stdin.take().expect("piped");
    let mut output = std::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut next_run = || -> Result<serde_json::Value, String> {
        let line = output.next().ok_or_else(|| format!("{what} ended before its run was done"))?.map_err(|e| e.to_string())?;
        serde_json::from_str(&line).map_err(|e| format!("{what} printed `{line}`: {e}"))
    };
    next_run()?;
    link_all(logs, all)?;
    writeln!(input).map_err(|e| format!("{what}: {e}"))?;
    let measured = next_run()?;
    // What it claims to measure: a run that parses the new objects and nothing else.
    let parsed = measured["report"]["counters"]["objects_parsed"].as_u64();
    if parsed != Some((all.len() - older.len()) as u64) {
        return Err(format!("{what}: the measured run parsed {parsed:?} objects, not the {} new ones", all.len() - older.len()));
    }
    drop(input);
    let process = reap(child, started, what)?;
    let wall = measured["wall_s"].as_f64().ok_or_else(|| format!("{what}: no wall_s in {measured}"))?;
    let cpu = measured["cpu_s"].as_f64().ok_or_else(|| format!("{what}: no cpu_s in {measured}"))?;
    Ok(Measurement { wall: Duration::from_secs_f64(wall), cpu: Some(Duration::from_secs_f64(cpu)), peak_rss_kib: process.peak_rss_kib })
}

/// `revokd-bench scheduled-runs`: the process `scheduled_run` measures. Opens revokd's
/// runtime once, as `revokd daemon` does, and runs once at each of `times` in turn (a dry
/// run, as every benchmark run is), waiting for a line on stdin before each run but the
/// first. Prints a JSON line per run: its wall and CPU seconds (all of the process's threads,
/// from getrusage) and its report.
pub fn scheduled_runs(config: &Path, times: &[chrono::DateTime<chrono::Utc>]) -> Result<(), String> {
    revokd::memory::tune_allocator();
    revokd::telemetry::init(revokd::telemetry::LogFormat::Json);
    let config = revokd::config::Config::load(Some(config)).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let rt = revokd::run::Runtime::open(config).await.map_err(|e| e.to_string())?;
        let mut input = std::io::stdin().lines();
        for (i, now) in times.iter().enumerate() {
            if i > 0 && input.next().is_none() {
                return Err("stdin closed before the next run".to_string());
            }
            let (cpu, started) = (process_cpu(), Instant::now());
            let options = revokd::run::RunOptions { now: Some(*now), dry_run: true, ..Default::default() };
            let report = revokd::run::run_once(&rt, &options).await;
            let (wall, cpu) = (started.elapsed(), process_cpu() - cpu);
            if let Some(e) = &report.error {
                return Err(format!("the run at {now}: {e}"));
            }
            println!("{}", serde_json::json!({ "wall_s": wall.as_secs_f64(), "cpu_s": cpu.as_secs_f64(), "report": report }));
        }
        Ok(())
    })
}

/// User plus system time of this process so far, all threads.
fn process_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value; getrusage writes only into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// The analysis stage's duration from a run's report.
fn analyse_stage(report: &serde_json::Value) -> Result<Duration, String> {
    report["stages"]["analyse_ms"]
        .as_u64()
        .map(Duration::from_millis)
        .ok_or_else(|| format!("no stages.analyse_ms in the run's report: {report}"))
}

fn duckdb_venv(args: &SpeedArgs) -> Result<PathBuf, String> {
    let venv = args.dir.parent().unwrap_or(Path::new(".")).join("bench-venv");
    let python = venv.join("bin/python");
    let ready = Command::new(&python).args(["-c", "import duckdb"]).output().is_ok_and(|o| o.status.success());
    if !ready {
        eprintln!("installing duckdb into {} ...", venv.display());
        let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip")).args(["install", "--quiet", "duckdb"]).status().is_ok_and(|s| s.success());
        if !ok {
            return Err("could not install duckdb (python3 -m venv; pip install duckdb)".into());
        }
    }
    Ok(python)
}

pub fn speed(args: SpeedArgs) -> Result<(), String> {
    if generate_dataset(&args)? {
        // Generating grew this process to hundreds of MiB, and on Linux a child spawned from
        // it inherits that high-water mark in its rusage: every peak RSS below would read at
        // least that much. A fresh process measures, on the files now on disk.
        let status = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
            .args(std::env::args_os().skip(1))
            .status()
            .map_err(|e| format!("restarting the benchmark: {e}"))?;
        return if status.success() { Ok(()) } else { Err(format!("benchmark exited with {status}")) };
    }
    let data = dataset(&args)?;
    let threads = args.threads;
    let end = START + HOUR;
    println!(
        "speed benchmark: {} lines, {} gzip files, {:.0} MB compressed / {:.0} MB inflated, {} threads, best of {} rounds (each measures every command once)",
        data.lines,
        data.files.len(),
        data.compressed_bytes as f64 / 1e6,
        data.inflated_bytes as f64 / 1e6,
        threads,
        args.repeat
    );
    // Figures move with the machine (this one changes between sessions): say which it was.
    println!("machine: {}, {} cores", cpu_model(), std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!();
    // Everything visible to the cold run: the hour, the held-back minute included.
    let all_logs = args.dir.join("all-logs");
    link_all(&all_logs, &data.files)?;

    // Rounds, each measuring every command once: this machine's speed drifts by 10-30 %
    // over minutes, and commands measured side by side see the same drift, so the ratios
    // compare like with like. Each command keeps its fastest round.
    let python = duckdb_venv(&args)?;
    let sql = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/reference_duckdb.sql");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/duckdb_reference.py");
    // The daemon's steady state: the cache holds the hour up to a minute ago; one new object
    // with the last minute arrives; the run looks back 10 minutes.
    let incremental_logs = args.dir.join("incremental-logs");
    let scheduled_logs = args.dir.join("scheduled-logs");
    let older: Vec<PathBuf> = data.files.iter().filter(|f| !f.starts_with(&data.new_minute)).cloned().collect();
    let mut report = serde_json::Value::Null;
    let [mut floor, mut zcat, mut cold, mut cached, mut cold_reference, mut duckdb, mut incremental, mut scheduled, mut cold_10m]: [Runs;
        9] = Default::default();
    // Each round's analysis stage (DataFusion's statements) with every object cached: what
    // the cold run would cost on top of the floor if reading cost no more than inflating.
    let mut cached_analysis = Vec::new();
    for round in 0..args.repeat.max(1) {
        let t = Instant::now();
        decompress_all(&data.files, threads, false)?;
        floor.add(Measurement { wall: t.elapsed(), cpu: None, peak_rss_kib: None });
        if round == 0 {
            zcat.add(measure(Command::new("sh").arg("-c").arg("zcat \"$@\" > /dev/null").arg("zcat").args(&data.files))?);
        }
        cold.add(revokd_run(&args, "cold-default", &all_logs, "default", "1h", end, true)?.0);
        let (m, r) = revokd_run(&args, "cold-default", &all_logs, "default", "1h", end, false)?;
        cached.add(m);
        cached_analysis.push(analyse_stage(&r)?);
        cold_reference.add(revokd_run(&args, "cold-reference", &all_logs, "reference", "1h", end, true)?.0);
        duckdb.add(measure(
            Command::new(&python)
                .arg(&script)
                .arg(&sql)
                .arg(threads.to_string())
                .arg((end - HOUR).to_string())
                .arg(end.to_string())
                .args(&data.files)
                .stdout(std::process::Stdio::null()),
        )?);
        link_all(&incremental_logs, &older)?;
        revokd_run(&args, "incremental", &incremental_logs, "default", "10m", end - 60, true)?;
        link_all(&incremental_logs, &data.files)?;
        let (m, r) = revokd_run(&args, "incremental", &incremental_logs, "default", "10m", end, false)?;
        incremental.add(m);
        report = r;
        scheduled.add(scheduled_run(&args, &scheduled_logs, &older, &data.files, end)?);
        cold_10m.add(revokd_run(&args, "cold-10m", &all_logs, "default", "10m", end, true)?.0);
    }
    let from_cache = report["counters"]["objects_from_cache"].as_u64().unwrap_or(0);
    let parsed = report["counters"]["objects_parsed"].as_u64().unwrap_or(0);

    let lines = data.lines as f64;
    let row = |label: &str, m: &Measurement, lines: Option<f64>| {
        let rss = m.peak_rss_kib.map_or("-".to_string(), |k| format!("{:.0} MiB", k as f64 / 1024.0));
        let rate = lines.map_or("-".to_string(), |l| format!("{:.2} M/s", l / m.wall.as_secs_f64() / 1e6));
        let cpu = m.cpu.map_or("-".to_string(), |c| format!("{:.2} s", c.as_secs_f64()));
        println!("{label:<62} {:>9.2} s {cpu:>9} {rate:>11} {rss:>11}", m.wall.as_secs_f64());
    };
    println!("{:<62} {:>11} {:>9} {:>11} {:>11}", "", "wall", "CPU", "lines/s", "peak RSS");
    row("(a) revokd run, cold, 1 h window, default detection", cold.best(), Some(lines));
    row("    revokd run, cold, 1 h window, reference scoring", cold_reference.best(), Some(lines));
    row("(b) DuckDB, reference scoring SQL over the gz files", duckdb.best(), Some(lines));
    row(&format!("(c) floor: inflate only ({threads} threads, zlib-rs)"), floor.best(), Some(lines));
    row("    zcat (1 thread)", zcat.best(), Some(lines));
    row("revokd run, 1 h window, every object cached", cached.best(), None);
    row("revokd run, cold, 10 min window", cold_10m.best(), None);
    row(&format!("revokd run, incremental: 1 new minute ({parsed} parsed, {from_cache} cached)"), incremental.best(), None);
    row("revokd daemon's scheduled run, the same minute, process kept", scheduled.best(), None);
    println!();
    let ratio = |a: &Runs, b: &Runs| {
        let (lo, hi) = a.ratio_range(b);
        (a.best().wall.as_secs_f64() / b.best().wall.as_secs_f64(), format!("(rounds {lo:.3}-{hi:.3})"))
    };
    let (a_b, a_b_rounds) = ratio(&cold, &duckdb);
    let (a_c, a_c_rounds) = ratio(&cold, &floor);
    let (inc, inc_rounds) = ratio(&incremental, &cold);
    let (sched, sched_rounds) = ratio(&scheduled, &cold);
    let (inc_10m, inc_10m_rounds) = ratio(&incremental, &cold_10m);
    println!("a / b (revokd / DuckDB)                 {a_b:.2}   target <= 0.5     {a_b_rounds}");
    println!("a / c (revokd / inflate floor)          {a_c:.2}   target <= 1.3     {a_c_rounds}");
    // The floor plus the analysis alone: how far a/c would fall if parsing and the cache
    // write cost nothing, round by round.
    let bounds = floor.0.iter().zip(&cached_analysis).map(|(f, a)| (f.wall + *a).as_secs_f64() / f.wall.as_secs_f64());
    let (bound_lo, bound_hi) = min_max(bounds);
    let least_analysis = cached_analysis.iter().min().copied().unwrap_or_default();
    println!(
        "  floor + analysis alone / floor        {:.2}                    (rounds {bound_lo:.3}-{bound_hi:.3}; analysis stage with every object cached {:.2} s)",
        (floor.best().wall + least_analysis).as_secs_f64() / floor.best().wall.as_secs_f64(),
        least_analysis.as_secs_f64()
    );
    println!("revokd lines per second                 {:.2} M  target >= 1 M", lines / cold.best().wall.as_secs_f64() / 1e6);
    let (rss_lo, rss_hi) = cold.peak_rss_range_mib();
    println!(
        "peak RSS, cold                          {:.0} MiB target <= 512 MiB (rounds {rss_lo:.0}-{rss_hi:.0} MiB)",
        cold.best().peak_rss_kib.unwrap_or(0) as f64 / 1024.0,
    );
    println!("scheduled run / cold 1 h                {sched:.3}  target <= 0.10    {sched_rounds}");
    if let Some((cpu, lo, hi)) = scheduled.cpu_ratio(&cold) {
        println!("scheduled run / cold 1 h, CPU time      {cpu:.3}                   (rounds {lo:.3}-{hi:.3})");
    }
    println!("incremental / cold 1 h                  {inc:.3}                   {inc_rounds}");
    println!("incremental / cold 10 min               {inc_10m:.3}                   {inc_10m_rounds}");
    if let Some((cpu, lo, hi)) = incremental.cpu_ratio(&cold) {
        println!("incremental / cold 1 h, CPU time        {cpu:.3}                   (rounds {lo:.3}-{hi:.3})");
    }
    Ok(())
}

/// The CPU's model name as the kernel reports it, or "unknown CPU".
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Makes `dir` hold exactly symlinks to `files`.
fn link_all(dir: &Path, files: &[PathBuf]) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for f in files {
        let target = std::fs::canonicalize(f).map_err(|e| format!("{}: {e}", f.display()))?;
        std::os::unix::fs::symlink(&target, dir.join(f.file_name().expect("file name"))).map_err(|e| e.to_string())?;
    }
    Ok(())
}
