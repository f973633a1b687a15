//! The command line: `revokd run | daemon | sessions list | revoke | unrevoke | migrate |
//! check-config | explain`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::run::{RunOptions, Runtime, run_once};
use crate::session::SessionId;
use crate::store::{EntryKind, Revocation};
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(name = "revokd", version, about = "Finds shared video playback sessions in CloudFront logs and revokes them at the edge (WAF).")]
pub struct Cli {
    /// Config file (TOML). Without one, the built-in defaults: logs in ./samples/logs, an
    /// embedded store and a rule-group file under ./revokd-state.
    #[arg(long, short, global = true, env = "REVOKD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log output format.
    #[arg(long, global = true, value_enum, default_value = "text", env = "REVOKD_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one analysis now (ad hoc) and exit; non-zero exit when the run failed.
    Run {
        /// Analyse as if it were this time (RFC 3339, e.g. 2026-11-20T10:10:00Z): replays old logs.
        #[arg(long, value_parser = parse_time)]
        now: Option<DateTime<Utc>>,
        /// Read and analyse, but write nothing (no store, no rule group).
        #[arg(long)]
        dry_run: bool,
        /// Observe mode for this run: full analysis and logging, no writes.
        #[arg(long)]
        observe: bool,
        /// Write a JSON report of the run (counters and every flagged session) to this file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Run on the configured schedule until SIGTERM/SIGINT (systemd Type=notify).
    Daemon,
    /// Inspect the revocation list.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Revoke sessions manually. Manual entries rank first and detection never overwrites them.
    Revoke {
        #[arg(required = true)]
        /// Session ids: the text before the first `.` of the token in the media URL's first
        /// path segment ([A-Za-z0-9_-], at most 128 characters).
        session_ids: Vec<String>,
        /// How long the revocation lasts (default: revocation.manual_ttl).
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<std::time::Duration>,
        /// Why (kept with the entry).
        #[arg(long, default_value = "revoked by operator")]
        reason: String,
        /// Only record; leave the rule group to the next run.
        #[arg(long)]
        no_enforce: bool,
    },
    /// Lift revocations. Detection leaves these sessions alone for revocation.unrevoke_cooldown.
    Unrevoke {
        #[arg(required = true)]
        /// Session ids: the text before the first `.` of the token in the media URL's first
        /// path segment ([A-Za-z0-9_-], at most 128 characters).
        session_ids: Vec<String>,
        /// Why (kept with the entry).
        #[arg(long, default_value = "unrevoked by operator")]
        reason: String,
        /// Only record; leave the rule group to the next run.
        #[arg(long)]
        no_enforce: bool,
    },
    /// Create the revocation table (DynamoDB) or database (embedded); a no-op when it exists.
    Migrate,
    /// Validate the configuration and the detection query; errors name the file and key.
    CheckConfig,
    /// Explain the decision about one session: each signal's value, threshold and
    /// contribution, over the window ending at --now. Reads only.
    Explain {
        /// The session id, as in `sessions list` or a run's report.
        session_id: String,
        /// The end of the window to analyse (RFC 3339; default: now).
        #[arg(long, value_parser = parse_time)]
        now: Option<DateTime<Utc>>,
        /// The start of the window (RFC 3339; default: schedule.lookback before --now). A run
        /// that reached back for logs delivered late reports its start as `window_start`.
        #[arg(long, value_parser = parse_time)]
        from: Option<DateTime<Utc>>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// The revocation list: id, type, reason, score, first seen, last updated, expires.
    List {
        /// JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Include expired entries, unrevoke cool-downs and held detections.
        #[arg(long)]
        all: bool,
        /// List as of this time (RFC 3339), e.g. the `--now` of a replayed run.
        #[arg(long, value_parser = parse_time)]
        now: Option<DateTime<Utc>>,
    },
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{s}` is not an RFC 3339 time like 2026-11-20T10:10:00Z ({e})"))
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(s)
}

fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    match parse_duration(s)? {
        ttl if ttl.is_zero() => Err("a revocation of 0s would expire as it is made: give a longer --ttl".into()),
        ttl => Ok(ttl),
    }
}

/// A failure to report to the user: message, and the exit code.
struct Failure(String, u8);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string(), 1)
    }
}

pub async fn main(cli: Cli) -> ExitCode {
    crate::telemetry::init(cli.log_format);
    match dispatch(cli).await {
        Ok(code) => code,
        Err(Failure(message, code)) => {
            eprintln!("revokd: {message}");
            ExitCode::from(code)
        }
    }
}

fn load_config(path: Option<&Path>) -> Result<Config, Failure> {
    Config::load(path).map_err(|e| Failure(e.to_string(), 2))
}

async fn dispatch(cli: Cli) -> Result<ExitCode, Failure> {
    let config = load_config(cli.config.as_deref())?;
    for dir in local_dirs_written(&config, &cli.command) {
        check_not_root_in_a_service_dir(&dir)?;
    }
    match cli.command {
        Command::CheckConfig => {
            check_config(&config).await?;
            println!("{}: OK", config.origin());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { now, dry_run, observe, report } => {
            // Before the run, not after its writes: a report that cannot be written would fail
            // a run that has already revoked.
            if let Some(folder) = report.as_deref().and_then(Path::parent).filter(|f| !f.as_os_str().is_empty() && !f.is_dir()) {
                return Err(Failure(format!("--report: {} is not a directory", folder.display()), 2));
            }
            // A replay's revocations expire revocation.ttl after its --now, and the daemon
            // enforces whatever has not expired: a mistyped year would block for years.
            if let Some(now) = now.filter(|now| *now > Utc::now() + chrono::Duration::minutes(1)) {
                return Err(Failure(
                    format!(
                        "--now {} is in the future: a run's revocations would expire revocation.ttl after it, and block until then; --now replays past logs",
                        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                    2,
                ));
            }
            let mut rt = Runtime::open(config).await?;
            // A bar in a terminal; never under systemd or with JSON logs.
            rt.source.show_progress(crate::telemetry::interactive(cli.log_format));
            // A run of the present (a timer's, or an operator's) extends what runs have
            // analysed; a replay of the past (`--now`) does not.
            let mut coverage = now.is_none().then(|| crate::daemon::Coverage::kept_in(&rt.config.state_dir));
            let last_analysed_until = coverage.as_ref().and_then(|c| c.analysed_until());
            let mut result = run_once(&rt, &RunOptions { now, dry_run, observe, last_analysed_until }).await;
            if let Some(coverage) = &mut coverage {
                coverage.record(&mut result);
            }
            if let Some(path) = report {
                let json = serde_json::to_vec_pretty(&result).expect("report serialises");
                std::fs::write(&path, json).map_err(|e| Failure(format!("writing report {}: {e}", path.display()), 1))?;
            }
            Ok(if result.succeeded() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Daemon => {
            check_config(&config).await?;
            let rt = Runtime::open(config).await?;
            crate::daemon::run_daemon(rt).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let store = crate::store::open(&config).await?;
            let created = store.migrate().await?;
            println!("{}: {}", store.describe(), if created { "created" } else { "already exists; nothing to do" });
            Ok(ExitCode::SUCCESS)
        }
        Command::Sessions { command: SessionsCommand::List { json, all, now } } => {
            let store = crate::store::open(&config).await?;
            let now = now.unwrap_or_else(Utc::now);
            let entries = if all { store.list_all().await? } else { store.active(now).await? };
            print(&entries, json, |out| write_table(out, &entries, now))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Revoke { session_ids, ttl, reason, no_enforce } => {
            let ttl = ttl.unwrap_or(config.revocation.manual_ttl);
            operator_write(config, &session_ids, EntryKind::Manual, ttl, reason, no_enforce).await
        }
        Command::Explain { session_id, now, from, json } => {
            if let Some(from) = from
                && from >= now.unwrap_or_else(Utc::now)
            {
                return Err(Failure(format!("--from {} is not before the window's end", from.to_rfc3339()), 2));
            }
            let rt = Runtime::open(config).await?;
            let explanation = crate::run::explain(&rt, &session_id, now, from).await?;
            print(&explanation, json, |out| write_explanation(out, &explanation))?;
            Ok(if explanation.found { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Unrevoke { session_ids, reason, no_enforce } => {
            let cooldown = config.revocation.unrevoke_cooldown;
            operator_write(config, &session_ids, EntryKind::Unrevoked, cooldown, reason, no_enforce).await
        }
    }
}

/// The local folders a command creates or rewrites files in.
fn local_dirs_written(config: &Config, command: &Command) -> Vec<PathBuf> {
    let runs = matches!(command, Command::Run { .. } | Command::Daemon | Command::Explain { .. });
    let reconciles = runs || matches!(command, Command::Revoke { .. } | Command::Unrevoke { .. });
    let mut dirs = Vec::new();
    if runs {
        // The parse cache and the record of what runs analysed.
        dirs.push(config.state_dir.clone());
    }
    if let crate::config::StoreConfig::Embedded { path } = &config.store
        && !matches!(command, Command::CheckConfig)
    {
        // SQLite writes its journal beside the database, even to read it.
        dirs.extend(path.parent().map(Path::to_path_buf));
    }
    if let crate::config::EnforcerConfig::File { path, .. } = &config.enforcer
        && reconciles
    {
        dirs.extend(path.parent().map(Path::to_path_buf));
    }
    dirs
}

/// Refuses root in a folder another user owns (the service's state): what root writes there
/// stays root's, and the service, no longer able to write its own database or rule file,
/// would fail every run after it.
fn check_not_root_in_a_service_dir(dir: &Path) -> Result<(), Failure> {
    use crate::ownership;
    // Not there yet: whoever creates it owns it.
    let Some(owner) = ownership::owner(dir) else { return Ok(()) };
    if ownership::effective_uid() != 0 || owner == 0 {
        return Ok(());
    }
    Err(Failure(
        format!(
            "{} belongs to uid {owner}, and revokd runs as root: files it wrote there would be root's, and the service could no longer write them. {}",
            dir.display(),
            ownership::run_as(owner)
        ),
        2,
    ))
}

/// Everything `check-config` checks, also run by the daemon before it starts.
async fn check_config(config: &Config) -> Result<(), Failure> {
    let analyzer = crate::analysis::Analyzer::new(config.detection.query.clone(), config.detection.params.clone());
    analyzer.validate().await.map_err(|e| Failure(format!("{}: key `detection.query`: {e}", config.origin()), 2))?;
    if let crate::config::LogLocation::Local(dir) = &config.logs.location
        && !dir.is_dir()
    {
        return Err(Failure(format!("{}: key `logs.url`: {} is not a directory", config.origin(), dir.display()), 2));
    }
    Ok(())
}

async fn operator_write(
    config: Config,
    session_ids: &[String],
    kind: EntryKind,
    lifetime: std::time::Duration,
    reason: String,
    no_enforce: bool,
) -> Result<ExitCode, Failure> {
    let mut ids = Vec::new();
    for raw in session_ids {
        ids.push(SessionId::parse(raw).map_err(|e| Failure(e.to_string(), 2))?);
    }
    let now = Utc::now();
    let expires_at = now + chrono::Duration::from_std(lifetime).map_err(|e| Failure(e.to_string(), 2))?;
    let entries: Vec<Revocation> = ids
        .iter()
        .map(|id| Revocation {
            session_id: id.to_string(),
            kind,
            reason: reason.clone(),
            score: None,
            signals: Default::default(),
            first_seen: now,
            last_updated: now,
            expires_at,
            run_id: None,
        })
        .collect();
    // The list and the rule group only: an operator revoking in an incident must not need
    // the logs to be reachable (a log mount that is down, a bucket without access).
    let store = crate::store::open(&config).await?;
    let mut replaced = Vec::new();
    for id in &ids {
        replaced.push(store.get(id).await?.filter(|entry| entry.expires_at > now).map(|entry| entry.kind));
    }
    store.put_manual(&entries).await?;
    for (id, replaced) in ids.iter().zip(replaced) {
        let was = replaced.map_or("nothing", EntryKind::as_str);
        tracing::info!(session_id = %id, kind = %kind, was, expires_at = %expires_at, reason = %reason, "revocation list updated by operator");
        // A mistyped id lifts nothing, and an operator who read only "updated" would think
        // the viewer unblocked.
        let lifts = matches!(replaced, Some(EntryKind::Manual | EntryKind::Auto | EntryKind::Held));
        if kind == EntryKind::Unrevoked && !lifts {
            tracing::warn!(session_id = %id, was, "this session had no revocation in force to lift (check the id); its cool-down is recorded all the same");
        }
    }
    if config.mode == crate::config::Mode::Observe {
        tracing::warn!("rule group left as it is: mode = observe; the first run in enforce mode blocks what the list holds");
    } else if no_enforce {
        tracing::info!("rule group left as it is (--no-enforce): the next run reconciles it");
    } else {
        let rules = crate::enforcer::open(&config).await;
        let outcome = crate::enforcer::reconcile(rules.as_ref(), store.as_ref(), now, config.enforcer.max_update_attempts(), false).await?;
        tracing::info!(group = %rules.describe(), added = outcome.added.len(), removed = outcome.removed.len(), rules = outcome.rules, updated = outcome.updated, "rule group reconciled");
        crate::run::log_enforcement(rules.as_ref(), &outcome, true);
        // Recorded but not blocked is not what the operator asked for: say which, and fail.
        let unblocked: Vec<&str> =
            ids.iter().map(SessionId::as_str).filter(|id| outcome.did_not_fit.iter().any(|left_out| left_out == id)).collect();
        if kind == EntryKind::Manual && !unblocked.is_empty() {
            return Err(Failure(
                format!(
                    "{} of the {} sessions are in the revocation list but not blocked: {} is full ({} rules, MANUAL revocations first): {}",
                    unblocked.len(),
                    ids.len(),
                    rules.describe(),
                    outcome.rules,
                    unblocked.join(", ")
                ),
                1,
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_explanation(out: &mut impl Write, e: &crate::run::Explanation) -> std::io::Result<()> {
    let time = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%SZ").to_string();
    writeln!(out, "session {}  window {} – {}  query {}", e.session_id, time(e.window_start), time(e.window_end), e.query)?;
    if !e.found {
        writeln!(out, "no requests of this session in the window: nothing to decide")?;
    } else {
        let score = e.score.map_or("not scored".into(), |s| format!("{s:.3}"));
        let threshold = e.threshold.map_or(String::new(), |t| format!(" (threshold {t})"));
        let decision = if e.flagged { "FLAGGED" } else { "not flagged" };
        writeln!(out, "decision: {decision}, score {score}{threshold}")?;
        if let Some(why) = &e.allowlisted {
            writeln!(out, "safety: not revoked automatically: {why}")?;
        }
        if !e.signals.is_empty() {
            writeln!(out)?;
            writeln!(out, "{:<28} {:>12} {:>12} {:>14}", "SIGNAL", "VALUE", "THRESHOLD", "CONTRIBUTION")?;
            let num = |v: Option<f64>| v.map_or("-".into(), |v| format!("{}", (v * 1000.0).round() / 1000.0));
            for s in &e.signals {
                writeln!(out, "{:<28} {:>12} {:>12} {:>14.3}", s.name, num(s.value), num(s.threshold), s.contribution)?;
            }
        }
        if !e.other_signals.is_empty() {
            let other: Vec<String> = e.other_signals.iter().map(|(k, v)| format!("{k}={}", (v * 1000.0).round() / 1000.0)).collect();
            writeln!(out, "\ncontext: {}", other.join(" "))?;
        }
        writeln!(out, "\nreasons:")?;
        for r in &e.reasons {
            writeln!(out, "  - {r}")?;
        }
    }
    match &e.revocation {
        Some(r) => writeln!(
            out,
            "\nrevocation list: {} since {}, updated {}, expires {}: {}",
            r.kind,
            time(r.first_seen),
            time(r.last_updated),
            time(r.expires_at),
            on_one_line(&r.reason)
        ),
        None => writeln!(out, "\nrevocation list: no entry"),
    }
}

/// Writes `value` to stdout as pretty JSON, or as text through `text`. A closed pipe
/// (`revokd sessions list | head`) is not an error.
fn print<T: serde::Serialize>(
    value: &T,
    json: bool,
    text: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>,
) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from).and_then(|_| writeln!(out))
    } else {
        text(&mut out)
    };
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure(format!("writing to stdout: {e}"), 1)),
        _ => Ok(()),
    }
}

fn write_table(out: &mut impl Write, entries: &[Revocation], now: DateTime<Utc>) -> std::io::Result<()> {
    let time = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%SZ").to_string();
    writeln!(out, "{:<40} {:<9} {:>7} {:<20} {:<20} {:<20} REASON", "SESSION", "TYPE", "SCORE", "FIRST SEEN", "LAST UPDATED", "EXPIRES")?;
    for e in entries {
        let score = e.score.map(|s| format!("{s:.2}")).unwrap_or_else(|| "-".into());
        let expires = if e.expires_at <= now { format!("{} (expired)", time(e.expires_at)) } else { time(e.expires_at) };
        writeln!(
            out,
            "{:<40} {:<9} {:>7} {:<20} {:<20} {:<20} {}",
            e.session_id,
            e.kind.as_str(),
            score,
            time(e.first_seen),
            time(e.last_updated),
            expires,
            on_one_line(&e.reason)
        )?;
    }
    Ok(())
}

/// A free-text field for a table row: control characters (a newline, a terminal escape in a
/// reason another tool wrote to the table) would break the row or the terminal.
fn on_one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}
