//! One analysis run: read the window's logs, score sessions, record what is flagged, reconcile
//! the rule group, and report. Shared by `revokd run` (ad hoc) and the daemon's schedule.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use chrono::{DateTime, Utc};
use tracing::Instrument;

use crate::analysis::{AnalysisError, Analyzer, PlannedAnalysis, SessionScore};
use crate::config::{Config, Mode};
use crate::enforcer::{self, EnforceOutcome, RuleGroup};
use crate::session::SessionId;
use crate::source::{LoadedLogs, LogSource, SourceError, SourceStats, Window};
use crate::store::{DetectedKind, Detection, RevocationStore};

/// Below this many new revocations the share limit does not apply: in a small window one leak
/// is already a large share.
pub const SHARE_GUARD_MIN: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("reading logs: {0}")]
    Source(#[from] crate::source::SourceError),
    #[error("analysis: {0}")]
    Analysis(#[from] crate::analysis::AnalysisError),
    #[error("revocation store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("enforcer: {0}")]
    Enforce(#[from] crate::enforcer::EnforceError),
}

/// The long-lived parts a run needs, opened once per process.
pub struct Runtime {
    pub config: Config,
    pub source: LogSource,
    pub analyzer: Analyzer,
    pub store: Box<dyn RevocationStore>,
    pub rules: Box<dyn RuleGroup>,
}

impl Runtime {
    pub async fn open(config: Config) -> Result<Runtime, RunError> {
        let source = LogSource::from_config(&config.logs, &config.state_dir).await?;
        let analyzer = Analyzer::new(config.detection.query.clone(), config.detection.params.clone());
        let store = crate::store::open(&config).await?;
        let rules = enforcer::open(&config).await;
        Ok(Runtime { config, source, analyzer, store, rules })
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Analyse as if it were this time (default: now).
    pub now: Option<DateTime<Utc>>,
    /// Read and analyse, write nothing.
    pub dry_run: bool,
    /// Force observe mode for this run.
    pub observe: bool,
    /// The end of the last successful run's window. A run of the present (no `now`) reaches
    /// back for the requests of log objects delivered since (`logs.max_delivery_delay`).
    pub last_analysed_until: Option<DateTime<Utc>>,
}

/// What happened to a flagged session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Newly revoked by this run.
    Revoked,
    /// Already revoked automatically; its expiry renewed.
    Renewed,
    /// A MANUAL entry is in force; left as it is.
    ProtectedManual,
    /// Unrevoked by an operator less than the cool-down ago.
    InCooldown,
    /// On the session or IP allowlist.
    Allowlisted,
    /// Held back by the blast-radius guard, recorded for review.
    Held,
    /// Its id is not a valid session id; never sent to the store or WAF.
    InvalidId,
    /// Observe mode or dry run: nothing written.
    NotWritten,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FlaggedSession {
    pub session_id: String,
    pub score: Option<f64>,
    /// The detection query's score components and signals.
    pub signals: BTreeMap<String, f64>,
    pub reasons: Vec<String>,
    pub action: Action,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Counters {
    #[serde(flatten)]
    pub source: SourceStats,
    pub sessions_analysed: u64,
    pub flagged: u64,
    pub newly_revoked: u64,
    pub renewed: u64,
    pub protected_manual: u64,
    pub in_cooldown: u64,
    pub allowlisted: u64,
    pub held: u64,
    pub invalid_ids: u64,
    pub active_revocations: u64,
    pub rules_added: u64,
    pub rules_removed: u64,
    pub rules_total: u64,
    pub rules_did_not_fit: u64,
    pub rule_group_updated: bool,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StageTimes {
    pub read_ms: u64,
    pub analyse_ms: u64,
    pub store_ms: u64,
    pub enforce_ms: u64,
    pub total_ms: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub mode: Mode,
    pub dry_run: bool,
    pub query: String,
    pub counters: Counters,
    pub stages: StageTimes,
    /// Set when the blast-radius guard stopped this run's new revocations.
    pub guard_tripped: Option<String>,
    pub flagged: Vec<FlaggedSession>,
    /// Set when the run failed; earlier stages' results above are still valid.
    pub error: Option<String>,
    /// Set for a run of the present (the daemon's, or `revokd run` without `--now`) whose
    /// window starts after the last successful run's ended: the requests in between were
    /// analysed by no run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unanalysed_before: Option<Unanalysed>,
}

/// Requests that no run analysed, `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Unanalysed {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl RunReport {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// Reads the window's logs and, on another core meanwhile, plans the detection query for it:
/// planning needs no logs, and after the read it kept one core busy while the other idled
/// (scheduled run ~5 % faster with the two overlapped, interleaved runs).
///
/// With `delivered_since`, the logs may come for a window that reaches back further
/// ([`crate::source::LogSource::load_reaching_back`]); the query is then planned again for it.
async fn read_and_plan(
    rt: &Runtime,
    window: &Window,
    delivered_since: Option<DateTime<Utc>>,
) -> (Result<LoadedLogs, SourceError>, Result<PlannedAnalysis, AnalysisError>) {
    let analyzer = rt.analyzer.clone();
    let planning_window = *window;
    let planning = tokio::spawn(async move { analyzer.plan(&planning_window).await });
    let logs = match delivered_since {
        Some(since) => rt.source.load_reaching_back(window, since).await,
        None => rt.source.load(window).await,
    };
    let mut planned = match planning.await {
        Ok(planned) => planned,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    if let Ok(logs) = &logs
        && logs.window != *window
    {
        planned = rt.analyzer.plan(&logs.window).await;
    }
    (logs, planned)
}

/// Runs once. Never panics on bad input: a failure is recorded in the report's `error`.
pub async fn run_once(rt: &Runtime, opts: &RunOptions) -> RunReport {
    let started = Instant::now();
    let started_at = Utc::now();
    let now = opts.now.unwrap_or(started_at);
    let window = Window::ending_at(now, rt.config.schedule.lookback);
    let mode = if opts.observe { Mode::Observe } else { rt.config.mode };
    let mut report = RunReport {
        run_id: uuid::Uuid::now_v7().to_string(),
        started_at,
        window_start: window.start,
        window_end: window.end,
        mode,
        dry_run: opts.dry_run,
        query: rt.analyzer.query().name.clone(),
        counters: Counters::default(),
        stages: StageTimes::default(),
        guard_tripped: None,
        flagged: Vec::new(),
        error: None,
        unanalysed_before: None,
    };
    // Every event of the run, whichever module emits it, carries the run id through this span
    // (instrumented, not entered: the run's future may move between threads).
    let span = tracing::info_span!("run", run_id = %report.run_id);
    span.in_scope(|| {
        tracing::info!(
            run_id = %report.run_id, window_start = %window.start, window_end = %window.end, mode = ?mode,
            dry_run = opts.dry_run, query = %report.query, logs = %rt.source.location(), "run started"
        )
    });
    // Only a run of the present can tell what was delivered since the last: replays of the
    // past read what the bucket holds now.
    let delivered_since = opts.last_analysed_until.filter(|_| opts.now.is_none());
    let result = run_stages(rt, &window, delivered_since, now, mode, opts.dry_run, &mut report).instrument(span.clone()).await;
    if let Err(e) = result {
        report.error = Some(e.to_string());
    }
    report.stages.total_ms = ms(started);
    span.in_scope(|| log_summary(&report));
    report
}

async fn run_stages(
    rt: &Runtime,
    window: &Window,
    delivered_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    mode: Mode,
    dry_run: bool,
    report: &mut RunReport,
) -> Result<(), RunError> {
    let writes = mode == Mode::Enforce && !dry_run;

    let t = Instant::now();
    let (logs, planned) = read_and_plan(rt, window, delivered_since).await;
    let logs = logs?;
    report.window_start = logs.window.start;
    report.counters.source = logs.stats.clone();
    report.stages.read_ms = ms(t);
    if logs.stats.objects == 0 {
        // Otherwise a run that can see nothing looks like a run that found nothing.
        tracing::warn!(
            logs = %rt.source.location(),
            "no log object can hold requests of this window: nothing is analysed \
             (CloudFront logging off or delayed, logs.url or logs.distribution_ids wrong, or no traffic)"
        );
    }

    let t = Instant::now();
    let allow_ip_sessions =
        if rt.config.safety.allow_ips.is_empty() { HashSet::new() } else { sessions_seen_from(&logs.batches, &rt.config.safety.allow_ips) };
    let analysed = async { planned?.analyse_where(logs.batches, |_, flagged| flagged).await }.await;
    logs.cache_writes.wait().await;
    let analysed = analysed?;
    report.stages.analyse_ms = ms(t);
    report.counters.sessions_analysed = analysed.sessions;
    let scores = analysed.scores;

    let t = Instant::now();
    let active_before = rt.store.active(now).await?;
    let active_ids: BTreeSet<&str> = active_before.iter().map(|r| r.session_id.as_str()).collect();
    let allow_sessions: BTreeSet<&str> = rt.config.safety.allow_sessions.iter().map(String::as_str).collect();

    let mut to_revoke: Vec<(usize, Detection)> = Vec::new();
    for score in scores.into_iter().filter(|s| s.flagged) {
        let index = report.flagged.len();
        let action = match SessionId::parse(&score.session_id) {
            Err(e) => {
                tracing::warn!(session_id = %score.session_id.escape_debug(), error = %e, "flagged session has an invalid id; not revoked");
                Some(Action::InvalidId)
            }
            Ok(_) if allow_sessions.contains(score.session_id.as_str()) => Some(Action::Allowlisted),
            Ok(_) if allow_ip_sessions.contains(&score.session_id) => Some(Action::Allowlisted),
            Ok(id) => {
                to_revoke.push((index, detection(id, &score)));
                None
            }
        };
        report.flagged.push(flagged_entry(score, action.unwrap_or(Action::NotWritten)));
    }

    // Blast-radius guard: a run that would newly revoke too much revokes nothing new.
    let new_count = to_revoke.iter().filter(|(_, d)| !active_ids.contains(d.session_id.as_str())).count();
    let share_limit = rt.config.safety.max_new_revocation_share * report.counters.sessions_analysed as f64;
    let guard = if new_count > rt.config.safety.max_new_revocations_per_run {
        Some(format!(
            "{new_count} new revocations exceed safety.max_new_revocations_per_run = {}",
            rt.config.safety.max_new_revocations_per_run
        ))
    } else if new_count >= SHARE_GUARD_MIN && new_count as f64 > share_limit {
        Some(format!(
            "{new_count} new revocations of {} sessions analysed exceed safety.max_new_revocation_share = {}",
            report.counters.sessions_analysed, rt.config.safety.max_new_revocation_share
        ))
    } else {
        None
    };
    let (held, to_revoke): (Vec<_>, Vec<_>) = if guard.is_some() {
        to_revoke.into_iter().partition(|(_, d)| !active_ids.contains(d.session_id.as_str()))
    } else {
        (Vec::new(), to_revoke)
    };
    if let Some(why) = &guard {
        tracing::error!(held = held.len(), reason = %why, "blast-radius guard tripped: no new revocations this run; flagged sessions held for review (check the detection parameters)");
        report.guard_tripped = Some(why.clone());
    }

    let expires_at = now + chrono::Duration::from_std(rt.config.revocation.ttl).expect("ttl fits");
    if writes {
        let detections: Vec<Detection> = to_revoke.iter().map(|(_, d)| d.clone()).collect();
        let outcome = rt.store.record(DetectedKind::Auto, &detections, now, expires_at, &report.run_id).await?;
        let written: BTreeSet<&str> = outcome.written.iter().map(SessionId::as_str).collect();
        let manual: BTreeSet<&str> = outcome.protected_manual.iter().map(SessionId::as_str).collect();
        let cooldown: BTreeSet<&str> = outcome.in_cooldown.iter().map(SessionId::as_str).collect();
        for (index, d) in &to_revoke {
            let id = d.session_id.as_str();
            report.flagged[*index].action = if written.contains(id) {
                if active_ids.contains(id) { Action::Renewed } else { Action::Revoked }
            } else if manual.contains(id) {
                Action::ProtectedManual
            } else if cooldown.contains(id) {
                Action::InCooldown
            } else {
                Action::Renewed
            };
        }
        if !held.is_empty() {
            let detections: Vec<Detection> = held.iter().map(|(_, d)| d.clone()).collect();
            rt.store.record(DetectedKind::Held, &detections, now, expires_at, &report.run_id).await?;
        }
    }
    for (index, _) in &held {
        report.flagged[*index].action = Action::Held;
    }
    let c = &mut report.counters;
    c.flagged = report.flagged.len() as u64;
    for f in &report.flagged {
        match f.action {
            Action::Revoked => c.newly_revoked += 1,
            Action::Renewed => c.renewed += 1,
            Action::ProtectedManual => c.protected_manual += 1,
            Action::InCooldown => c.in_cooldown += 1,
            Action::Allowlisted => c.allowlisted += 1,
            Action::Held => c.held += 1,
            Action::InvalidId => c.invalid_ids += 1,
            Action::NotWritten => {}
        }
    }
    for f in &report.flagged {
        log_flagged(f, &report.run_id);
    }
    report.stages.store_ms = ms(t);

    let t = Instant::now();
    let outcome = enforcer::reconcile(rt.rules.as_ref(), rt.store.as_ref(), now, rt.config.enforcer.max_update_attempts(), !writes).await?;
    report.stages.enforce_ms = ms(t);
    log_enforcement(rt.rules.as_ref(), &outcome, writes);
    let c = &mut report.counters;
    c.active_revocations = outcome.active as u64;
    c.rules_added = outcome.added.len() as u64;
    c.rules_removed = outcome.removed.len() as u64;
    c.rules_total = outcome.rules as u64;
    c.rules_did_not_fit = outcome.did_not_fit.len() as u64;
    c.rule_group_updated = outcome.updated;
    Ok(())
}

/// Why a session is (or is not) flagged at a given time: for `revokd explain`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explanation {
    pub session_id: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub query: String,
    /// Whether the session has requests in the window.
    pub found: bool,
    pub score: Option<f64>,
    pub threshold: Option<f64>,
    pub flagged: bool,
    pub signals: Vec<crate::analysis::SignalRow>,
    pub other_signals: BTreeMap<String, f64>,
    pub reasons: Vec<String>,
    /// Set when the safety rails would keep a flagged session from being revoked.
    pub allowlisted: Option<String>,
    /// The session's entry in the revocation list, if any.
    pub revocation: Option<crate::store::Revocation>,
}

/// Analyses the window ending at `now` (default: now) and explains one session. Reads only.
/// The window starts at `from` if given (a run that reached back for logs delivered late
/// analysed from its report's `window_start`), else a lookback before `now`.
pub async fn explain(
    rt: &Runtime,
    session_id: &str,
    now: Option<DateTime<Utc>>,
    from: Option<DateTime<Utc>>,
) -> Result<Explanation, RunError> {
    let now = now.unwrap_or_else(Utc::now);
    let window = match from {
        Some(start) => Window { start, end: now },
        None => Window::ending_at(now, rt.config.schedule.lookback),
    };
    let (logs, planned) = read_and_plan(rt, &window, None).await;
    let logs = logs?;
    let allowed_by_ip =
        !rt.config.safety.allow_ips.is_empty() && sessions_seen_from(&logs.batches, &rt.config.safety.allow_ips).contains(session_id);
    let analysed = async { planned?.analyse_where(logs.batches, |id, _| id == session_id).await }.await;
    logs.cache_writes.wait().await;
    let score = analysed?.scores.into_iter().next();
    let revocation = match SessionId::parse(session_id) {
        Ok(id) => rt.store.get(&id).await?,
        Err(_) => None,
    };
    let allowlisted = if rt.config.safety.allow_sessions.iter().any(|s| s == session_id) {
        Some("session is on safety.allow_sessions".to_string())
    } else if allowed_by_ip {
        Some("session has requests from a network on safety.allow_ips".to_string())
    } else {
        None
    };
    Ok(Explanation {
        session_id: session_id.to_string(),
        window_start: window.start,
        window_end: window.end,
        query: rt.analyzer.query().name.clone(),
        found: score.is_some(),
        score: score.as_ref().and_then(|s| s.score),
        threshold: score.as_ref().and_then(SessionScore::threshold),
        flagged: score.as_ref().is_some_and(|s| s.flagged),
        signals: score.as_ref().map(SessionScore::signal_rows).unwrap_or_default(),
        other_signals: score.as_ref().map(SessionScore::other_signals).unwrap_or_default(),
        reasons: score.map(|s| s.reasons).unwrap_or_default(),
        allowlisted,
        revocation,
    })
}

fn detection(session_id: SessionId, score: &SessionScore) -> Detection {
    Detection { session_id, score: score.score, reason: score.reasons.join("; "), signals: score.signals.clone() }
}

fn flagged_entry(score: SessionScore, action: Action) -> FlaggedSession {
    FlaggedSession { session_id: score.session_id, score: score.score, signals: score.signals, reasons: score.reasons, action }
}

/// Sessions with at least one request from an allowlisted network.
fn sessions_seen_from(batches: &[RecordBatch], nets: &[ipnet::IpNet]) -> HashSet<String> {
    let mut found = HashSet::new();
    for batch in batches {
        let (Some(ids), Some(ips)) = (batch.column_by_name("session_id"), batch.column_by_name("c_ip")) else {
            continue;
        };
        let (Ok(ids), Ok(ips)) = (cast(ids, &DataType::Utf8), cast(ips, &DataType::Utf8)) else { continue };
        let (ids, ips) = (ids.as_string::<i32>(), ips.as_string::<i32>());
        for row in 0..batch.num_rows() {
            if ips.is_null(row) || ids.is_null(row) {
                continue;
            }
            if let Ok(ip) = ips.value(row).parse::<std::net::IpAddr>()
                && nets.iter().any(|n| n.contains(&ip))
            {
                found.insert(ids.value(row).to_string());
            }
        }
    }
    found
}

fn log_flagged(f: &FlaggedSession, run_id: &str) {
    let signal = |name: &str| f.signals.get(name).copied();
    tracing::info!(
        run_id,
        session_id = %f.session_id,
        score = f.score,
        action = ?f.action,
        reasons = ?f.reasons,
        ips = signal("ips"),
        user_agents = signal("user_agents"),
        referers = signal("referers"),
        signals = %serde_json::to_string(&f.signals).unwrap_or_default(),
        "session flagged"
    );
}

pub(crate) fn log_enforcement(group: &dyn RuleGroup, outcome: &EnforceOutcome, writes: bool) {
    if !outcome.did_not_fit.is_empty() {
        // Which ones, for the operator to act on; the first few, as thousands may not fit.
        const NAMED: usize = 20;
        let left_out = outcome.did_not_fit.iter().take(NAMED).map(String::as_str).collect::<Vec<_>>().join(", ");
        let more = outcome.did_not_fit.len().saturating_sub(NAMED);
        tracing::warn!(
            group = %group.describe(),
            did_not_fit = outcome.did_not_fit.len(),
            rules = outcome.rules,
            left_out = %if more > 0 { format!("{left_out} (+{more} more)") } else { left_out },
            "revoked sessions left out of the rule group: capacity reached (the lowest-scored AUTO entries first, then the newest MANUAL ones)"
        );
    }
    if outcome.changed && !writes {
        tracing::info!(group = %group.describe(), would_add = outcome.added.len(), would_remove = outcome.removed.len(), "rule group not written (observe mode or dry run)");
    }
}

fn log_summary(r: &RunReport) {
    let c = &r.counters;
    let s = &r.stages;
    if let Some(error) = &r.error {
        tracing::error!(run_id = %r.run_id, error = %error, total_ms = s.total_ms, "run failed");
        return;
    }
    tracing::info!(
        run_id = %r.run_id,
        objects = c.source.objects,
        objects_parsed = c.source.objects_parsed,
        objects_from_cache = c.source.objects_from_cache,
        objects_unreadable = c.source.objects_unreadable,
        objects_delivered_late = c.source.objects_delivered_late,
        objects_delivered_too_late = c.source.objects_delivered_too_late,
        lines_delivered_too_late = c.source.lines_delivered_too_late,
        window_start = %r.window_start,
        lines = c.source.parse.lines,
        malformed_lines = c.source.parse.malformed_lines,
        sessions_analysed = c.sessions_analysed,
        flagged = c.flagged,
        newly_revoked = c.newly_revoked,
        renewed = c.renewed,
        protected_manual = c.protected_manual,
        in_cooldown = c.in_cooldown,
        held = c.held,
        active_revocations = c.active_revocations,
        rules_added = c.rules_added,
        rules_removed = c.rules_removed,
        rules_total = c.rules_total,
        rule_group_updated = c.rule_group_updated,
        read_ms = s.read_ms,
        analyse_ms = s.analyse_ms,
        store_ms = s.store_ms,
        enforce_ms = s.enforce_ms,
        total_ms = s.total_ms,
        "run finished"
    );
}
