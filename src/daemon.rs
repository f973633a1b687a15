//! The scheduler: runs on the configured cron schedule until SIGTERM/SIGINT. Runs never
//! overlap — a tick that finds the previous run still going is skipped with a warning — and
//! a run whose window starts after the last successful one's ended says which requests no
//! run analysed. systemd is told READY, STATUS and STOPPING through sd_notify (a no-op
//! outside systemd), and fed its watchdog while the schedule keeps ticking. A schedule that
//! falls silent for longer than its runs are apart, or a run that goes on for longer than
//! `schedule.max_run_duration`, stops the daemon with an error, for the service manager to
//! start it again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::run::{RunOptions, RunReport, Runtime, Unanalysed, run_once};

/// How long a stop waits for the run in progress before leaving it.
const STOP_GRACE: Duration = Duration::from_secs(60);
/// How long a stop waits for the scheduler to shut down (it answers at once unless broken).
const SCHEDULER_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("scheduler: {0}")]
    Scheduler(#[from] tokio_cron_scheduler::JobSchedulerError),
    #[error("installing signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error(
        "schedule.cron = \"{cron}\" has not started a run for {silent}, though its runs come at most {longest} apart: \
         the scheduler has stopped; exiting so that the service manager starts revokd again"
    )]
    Stalled { cron: String, silent: humantime::FormattedDuration, longest: humantime::FormattedDuration },
    #[error(
        "the run in progress has gone on for {running}, longer than schedule.max_run_duration ({limit}): \
         taken for hung; exiting so that the service manager starts revokd again"
    )]
    RunHung { running: humantime::FormattedDuration, limit: humantime::FormattedDuration },
}

/// How much later than due a tick may come before the schedule counts as stalled: the
/// scheduler fires on a half-second beat, and a loaded machine starts it late.
const TICK_SLACK: Duration = Duration::from_secs(60);
/// How often the schedule is checked, and at least how often systemd's watchdog is fed.
const WATCH_PERIOD: Duration = Duration::from_secs(30);

/// When the schedule last started a run (or skipped one because a run was still going), for
/// telling a live daemon from one whose scheduler has stopped: the process is up, systemd
/// sees nothing wrong, and no request is analysed any more. Silence longer than the longest
/// time between two runs of the schedule is a fault, not a quiet schedule.
#[derive(Debug)]
struct Heartbeat {
    last_tick: std::sync::Mutex<Instant>,
    silent_at_most: Duration,
}

impl Heartbeat {
    /// A heartbeat that has just ticked, for a schedule with at most `longest` between runs.
    fn new(longest: Duration) -> Heartbeat {
        Heartbeat { last_tick: std::sync::Mutex::new(Instant::now()), silent_at_most: longest + TICK_SLACK }
    }

    fn tick(&self) {
        *unpoisoned(&self.last_tick) = Instant::now();
    }

    /// How long the schedule has been silent at `now`, when that is longer than it may be.
    fn stalled(&self, now: Instant) -> Option<Duration> {
        let silent = now.saturating_duration_since(*unpoisoned(&self.last_tick));
        (silent > self.silent_at_most).then_some(silent)
    }
}

/// A lock on a time that one thread sets and another reads: a panic while holding it cannot
/// leave it half-written, so a poisoned lock is as good as a clean one.
fn unpoisoned<T>(lock: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why the watch ended: the daemon cannot go on by itself.
#[derive(Debug, PartialEq)]
enum Fault {
    /// The schedule has been silent this long.
    Stalled(Duration),
    /// The run in progress has gone on this long.
    RunHung(Duration),
}

/// Feeds systemd's watchdog (when `WatchdogSec=` is set) while the schedule ticks and no run
/// hangs. Returns a fault: a run going on for longer than `max_run`, or a schedule found
/// stalled at two checks in a row. The second check gives a scheduler that was merely held
/// up (a process stopped and continued, a machine starved of CPU) the time to fire the tick
/// it owes.
async fn watch(heartbeat: &Heartbeat, in_progress: &RunInProgress, max_run: Duration, watchdog: Option<Duration>) -> Fault {
    let period = watchdog.map_or(WATCH_PERIOD, |timeout| (timeout / 2).clamp(Duration::from_millis(100), WATCH_PERIOD));
    let mut checks = tokio::time::interval(period);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stalled_before = false;
    loop {
        checks.tick().await;
        let now = Instant::now();
        if let Some(running) = in_progress.running_for(now).filter(|running| *running > max_run) {
            return Fault::RunHung(running);
        }
        match heartbeat.stalled(now) {
            Some(silent) if stalled_before => return Fault::Stalled(silent),
            Some(_) => stalled_before = true,
            None => {
                stalled_before = false;
                if watchdog.is_some() {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    }
}

/// Checks a cron expression as the scheduler will read it.
pub fn validate_cron(expr: &str) -> Result<(), String> {
    Job::new_async(expr, |_, _| Box::pin(async {})).map(|_| ()).map_err(|_| {
        format!("`{expr}` is not a cron expression with seconds (sec min hour day-of-month month day-of-week, e.g. \"0 */5 * * * *\")")
    })
}

/// The longest time between two runs of a schedule, where it is longer than the lookback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleGap {
    /// The longest time between two runs found, longer than the lookback.
    pub longest: Duration,
    /// The run it follows.
    pub after: DateTime<Utc>,
}

/// Time checked, from the schedule's first run: daily and weekly patterns repeat within it,
/// and a gap that starts within it is found however long it lasts.
const SCHEDULE_CHECK_HORIZON: chrono::TimeDelta = chrono::TimeDelta::days(8);
/// Steps at most: a schedule and a lookback of a second each would take 700,000, and are
/// checked over their first 20,000 runs (~30 ms in a debug build).
const SCHEDULE_CHECK_MAX_STEPS: usize = 20_000;

/// Checks that runs on `cron`, each analysing the `lookback` before it, leave no request
/// unanalysed: a run at `t` covers `[t - lookback, t)`, so the next one must come within
/// `lookback`. Returns the longest gap that does not, or an error if the schedule never
/// runs. Checked from 2024-01-01 (a Monday of a leap year) over 8 days from its first run.
pub fn schedule_gap(cron: &str, lookback: Duration) -> Result<Option<ScheduleGap>, String> {
    // As tokio-cron-scheduler parses it.
    let schedule = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(cron)
        .map_err(|e| format!("`{cron}`: {e}"))?;
    // The first run at or after `t`; `None` when there is none.
    let first_from = |t: DateTime<Utc>| schedule.find_next_occurrence(&t, true).ok();
    let second = chrono::TimeDelta::seconds(1);
    let reference = DateTime::<Utc>::from_timestamp(1_704_067_200, 0).expect("valid time");
    let first = first_from(reference).ok_or_else(|| format!("`{cron}` never runs"))?;
    // Cron times are whole seconds, and so is what a gap is compared with.
    let lookback_s = lookback.as_secs().min(u32::MAX as u64) as i64;
    let (lookback, half) = (chrono::TimeDelta::seconds(lookback_s), chrono::TimeDelta::seconds((lookback_s / 2).max(1)));
    let mut gap: Option<ScheduleGap> = None;
    let mut at = first;
    for _ in 0..SCHEDULE_CHECK_MAX_STEPS {
        if at >= first + SCHEDULE_CHECK_HORIZON {
            break;
        }
        // Half a lookback ahead: a schedule much denser than its lookback is crossed in
        // steps of that size, since no gap up to a run within reach can be too long.
        let Some(ahead) = first_from(at + half) else { break };
        if ahead - at > lookback {
            // A gap too long ends at `ahead`, and starts at the last run before `at + half`,
            // found by halving that span.
            let (mut last, mut beyond) = (at, at + half);
            while beyond - last > second {
                // Whole seconds: croner reads a time within a second as that second.
                let middle = last + chrono::TimeDelta::seconds((beyond - last).num_seconds() / 2);
                if first_from(middle).is_some_and(|run| run < at + half) {
                    last = middle;
                } else {
                    beyond = middle;
                }
            }
            if ahead - last > lookback {
                let longest = (ahead - last).to_std().unwrap_or(Duration::MAX);
                if gap.as_ref().is_none_or(|g| longest > g.longest) {
                    gap = Some(ScheduleGap { longest, after: last });
                }
            }
        }
        at = ahead;
    }
    Ok(gap)
}

/// The longest time between two runs of `cron` (over the days [`schedule_gap`] checks).
fn longest_time_between_runs(cron: &str) -> Option<Duration> {
    // Every gap is longer than a lookback of zero: the longest of them is returned.
    schedule_gap(cron, Duration::ZERO).ok().flatten().map(|gap| gap.longest)
}

fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// How far successful scheduled runs have analysed, to tell when one starts its window after
/// the last one's end: ticks skipped while a long run went on (twice in a row, with the
/// default lookback of two intervals), a process paused or starved of CPU, or a daemon (or
/// timer) that was stopped. Kept in `state_dir`, so that restarts and the one-shot runs of a
/// timer are compared with the run before them.
#[derive(Debug, Default)]
pub struct Coverage {
    analysed_until: Option<DateTime<Utc>>,
    file: Option<PathBuf>,
    /// When the run holding this coverage started, for the watch to read while it holds it.
    in_progress: RunInProgress,
}

/// When the run in progress started, if one is: shared between the lock a run holds and the
/// daemon's watch, which must tell a hung run without waiting for that lock.
#[derive(Debug, Default, Clone)]
struct RunInProgress(Arc<std::sync::Mutex<Option<Instant>>>);

impl RunInProgress {
    /// Marks a run started; it counts as over when the guard is dropped, however it ends.
    fn start(&self) -> impl Drop + '_ {
        struct Over<'a>(&'a RunInProgress);
        impl Drop for Over<'_> {
            fn drop(&mut self) {
                *unpoisoned(&self.0.0) = None;
            }
        }
        *unpoisoned(&self.0) = Some(Instant::now());
        Over(self)
    }

    /// How long the run in progress has gone on at `now`.
    fn running_for(&self, now: Instant) -> Option<Duration> {
        unpoisoned(&self.0).map(|started| now.saturating_duration_since(started))
    }
}

impl Coverage {
    const FILE: &str = "analysed-until";

    /// The coverage recorded under `state_dir`, kept there as runs are recorded. A missing
    /// file is a first run; an unreadable one is reported and started afresh.
    pub fn kept_in(state_dir: &Path) -> Coverage {
        let file = state_dir.join(Self::FILE);
        let analysed_until = match std::fs::read_to_string(&file) {
            Ok(text) => match DateTime::parse_from_rfc3339(text.trim()) {
                Ok(until) => Some(until.with_timezone(&Utc)),
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "unreadable record of what earlier runs analysed; starting afresh");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot read the record of what earlier runs analysed; starting afresh");
                None
            }
        };
        Coverage { analysed_until, file: Some(file), in_progress: RunInProgress::default() }
    }

    /// Records a finished run: sets its report's `unanalysed_before` (with a warning) when
    /// its window starts after the last successful run's ended. A failed run analysed
    /// nothing: the next successful one is compared with the last that succeeded.
    pub fn record(&mut self, report: &mut RunReport) {
        if !report.succeeded() {
            return;
        }
        let until = self.analysed_until;
        self.analysed_until = Some(until.map_or(report.window_end, |until| until.max(report.window_end)));
        self.save();
        report.unanalysed_before =
            until.filter(|until| report.window_start > *until).map(|from| Unanalysed { from, to: report.window_start });
        if let Some(gap) = report.unanalysed_before {
            tracing::warn!(
                run_id = %report.run_id,
                unanalysed_from = %gap.from,
                unanalysed_to = %gap.to,
                unanalysed_s = (gap.to - gap.from).num_seconds(),
                "requests between the last successful run's window and this one's were analysed by no run: \
                 runs came farther apart than schedule.lookback (a stop, ticks skipped while a run went on, or a paused process)"
            );
        }
    }

    /// The end of the last successful run's window, if any run succeeded.
    pub fn analysed_until(&self) -> Option<DateTime<Utc>> {
        self.analysed_until
    }

    fn save(&self) {
        let (Some(file), Some(until)) = (&self.file, self.analysed_until) else { return };
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| crate::atomic_file::replace(file, until.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true).as_bytes()));
        if let Err(e) = written {
            tracing::warn!(file = %file.display(), error = %e, "cannot record what this run analysed");
        }
    }
}

/// One scheduled run (as if at `now`, for tests; the daemon passes `None`), unless a run is
/// already in progress: then `None`, with a warning. `runs` is held while a run goes on.
pub async fn scheduled_run(rt: &Runtime, runs: &Mutex<Coverage>, now: Option<DateTime<Utc>>) -> Option<RunReport> {
    let Ok(mut coverage) = runs.try_lock() else {
        tracing::warn!("previous run still in progress; skipping this scheduled run");
        return None;
    };
    let in_progress = coverage.in_progress.clone();
    let running = in_progress.start();
    let mut report = run_once(rt, &RunOptions { now, last_analysed_until: coverage.analysed_until(), ..RunOptions::default() }).await;
    drop(running);
    coverage.record(&mut report);
    let status = match &report.error {
        None => format!(
            "last run {}: {} sessions, {} flagged, {} newly revoked, {} rules",
            report.started_at.format("%H:%M:%SZ"),
            report.counters.sessions_analysed,
            report.counters.flagged,
            report.counters.newly_revoked,
            report.counters.rules_total
        ),
        Some(e) => format!("last run {} failed: {e}", report.started_at.format("%H:%M:%SZ")),
    };
    notify(&[sd_notify::NotifyState::Status(&status)]);
    Some(report)
}

async fn tick(rt: Arc<Runtime>, runs: Arc<Mutex<Coverage>>) {
    scheduled_run(&rt, &runs, None).await;
}

pub async fn run_daemon(rt: Runtime) -> Result<(), DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    // SIGHUP's default action ends the process, and systemd's Restart=on-failure does not
    // restart a service that SIGHUP ended: a habitual `kill -HUP` to reload would stop
    // detection until someone noticed.
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;

    let rt = Arc::new(rt);
    let coverage = Coverage::kept_in(&rt.config.state_dir);
    let in_progress = coverage.in_progress.clone();
    let runs = Arc::new(Mutex::new(coverage));
    // Not the lookback: a schedule can run far more often than its lookback requires, and a
    // stopped one is found as soon as a tick is overdue, not once requests go unanalysed.
    let longest = longest_time_between_runs(&rt.config.schedule.cron).unwrap_or(rt.config.schedule.lookback);
    let heartbeat = Arc::new(Heartbeat::new(longest));
    let mut scheduler = JobScheduler::new().await?;
    let (job_rt, job_runs, job_heartbeat) = (rt.clone(), runs.clone(), heartbeat.clone());
    let job = Job::new_async(rt.config.schedule.cron.as_str(), move |_, _| {
        job_heartbeat.tick();
        let (rt, runs) = (job_rt.clone(), job_runs.clone());
        Box::pin(async move { tick(rt, runs).await })
    })?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    let watchdog = sd_notify::watchdog_enabled();
    tracing::info!(
        cron = %rt.config.schedule.cron,
        lookback_s = rt.config.schedule.lookback.as_secs(),
        watchdog_s = watchdog.map(|w| w.as_secs_f64()),
        "daemon started"
    );
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("waiting for the first run")]);
    if rt.config.schedule.run_on_start {
        tokio::spawn(tick(rt.clone(), runs.clone()));
    }

    let watching = watch(&heartbeat, &in_progress, rt.config.schedule.max_run_duration, watchdog);
    tokio::pin!(watching);
    let fault = loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!(signal = "SIGTERM", "stopping"); break None }
            _ = sigint.recv() => { tracing::info!(signal = "SIGINT", "stopping"); break None }
            _ = sighup.recv() => tracing::warn!(
                signal = "SIGHUP",
                "ignored: revokd does not reload its config; restart it to apply a change (systemctl restart revokd: state and cache are kept)"
            ),
            fault = &mut watching => break Some(fault),
        }
    };
    // Whole seconds: a fault is minutes long, and its nanoseconds are noise.
    let seconds = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs()));
    let error = fault.map(|fault| match fault {
        Fault::Stalled(silent) => DaemonError::Stalled {
            cron: rt.config.schedule.cron.clone(),
            silent: seconds(silent),
            longest: humantime::format_duration(longest),
        },
        Fault::RunHung(running) => {
            DaemonError::RunHung { running: seconds(running), limit: humantime::format_duration(rt.config.schedule.max_run_duration) }
        }
    });
    if let Some(e) = &error {
        tracing::error!(error = %e, "stopping");
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(e @ DaemonError::RunHung { .. }) = &error {
        // A hung run holds a core or a blocking thread that no shutdown can take back, and
        // the runtime would wait for it on the way out: leave now.
        eprintln!("revokd: {e}");
        std::process::exit(1);
    }
    // A scheduler that has stopped ticking may not answer a shutdown either.
    match tokio::time::timeout(SCHEDULER_SHUTDOWN_GRACE, scheduler.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "scheduler shutdown failed"),
        Err(_) => tracing::warn!(grace_s = SCHEDULER_SHUTDOWN_GRACE.as_secs(), "scheduler did not shut down; leaving it"),
    }
    match tokio::time::timeout(STOP_GRACE, runs.lock()).await {
        Ok(_) => tracing::info!("stopped"),
        Err(_) => tracing::warn!(grace_s = STOP_GRACE.as_secs(), "run still in progress at stop; abandoned"),
    }
    error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(cron: &str, lookback_s: u64) -> Option<(u64, String)> {
        schedule_gap(cron, Duration::from_secs(lookback_s))
            .unwrap()
            .map(|g| (g.longest.as_secs(), g.after.format("%a %H:%M:%S").to_string()))
    }

    #[test]
    fn a_lookback_shorter_than_the_time_between_runs_leaves_a_gap() {
        // Every 5 minutes: a lookback of 5 minutes or more covers everything, a second less
        // does not.
        assert_eq!(gap("0 */5 * * * *", 600), None);
        assert_eq!(gap("0 */5 * * * *", 300), None);
        assert_eq!(gap("0 */5 * * * *", 299), Some((300, "Mon 00:00:00".into())));
        assert_eq!(gap("0 */5 * * * *", 120), Some((300, "Mon 00:00:00".into())));
    }

    #[test]
    fn the_longest_gap_is_found_overnight_and_over_the_weekend() {
        assert_eq!(gap("0 */5 8-17 * * *", 3600), Some((14 * 3600 + 300, "Mon 17:55:00".into())));
        assert_eq!(gap("0 * * * * 1-5", 3600), Some((2 * 86_400 + 60, "Fri 23:59:00".into())));
        // Monthly: the gap from one month's run to the next, longer than the days checked.
        assert_eq!(gap("0 0 0 1 * *", 86_400), Some((31 * 86_400, "Mon 00:00:00".into())));
    }

    #[test]
    fn a_schedule_denser_than_its_lookback_is_crossed_in_steps_and_its_gaps_still_found() {
        // Every second from 08:00:00 to 17:59:59: the gap starts at the last second of the day.
        assert_eq!(gap("* * 8-17 * * *", 3600), Some((14 * 3600 + 1, "Mon 17:59:59".into())));
        assert_eq!(gap("* * 8-17 * * *", 14 * 3600 + 1), None);
        assert_eq!(gap("* * * * * *", 1), None);
    }

    #[test]
    fn the_time_a_schedule_may_be_silent_is_its_longest_time_between_runs() {
        let longest = |cron: &str| longest_time_between_runs(cron).map(|d| d.as_secs());
        assert_eq!(longest("0 */5 * * * *"), Some(300));
        assert_eq!(longest("*/20 * * * * *"), Some(20));
        assert_eq!(longest("0 */5 8-17 * * *"), Some(14 * 3600 + 300), "overnight");
    }

    #[test]
    fn a_schedule_is_stalled_only_when_silent_for_longer_than_its_longest_gap_and_a_minute() {
        let heartbeat = Heartbeat::new(Duration::from_secs(600));
        let started = *heartbeat.last_tick.lock().unwrap();
        assert_eq!(heartbeat.stalled(started + Duration::from_secs(600)), None);
        assert_eq!(heartbeat.stalled(started + Duration::from_secs(660)), None, "a tick a minute late is still a tick");
        assert_eq!(heartbeat.stalled(started + Duration::from_secs(661)), Some(Duration::from_secs(661)));
        heartbeat.tick();
        let ticked = *heartbeat.last_tick.lock().unwrap();
        assert!(ticked > started);
        assert_eq!(heartbeat.stalled(ticked + Duration::from_secs(660)), None, "a tick starts the silence again");
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn idle() -> RunInProgress {
        RunInProgress::default()
    }

    #[tokio::test]
    async fn a_run_going_on_longer_than_max_run_duration_ends_the_watch_and_one_within_it_does_not() {
        let heartbeat = silent_since(Duration::ZERO, HOUR);
        let in_progress = RunInProgress::default();
        let running = in_progress.start();
        let watching =
            tokio::time::timeout(Duration::from_millis(500), watch(&heartbeat, &in_progress, HOUR, Some(Duration::from_millis(100))));
        assert!(watching.await.is_err(), "a run well within its limit was taken for hung");
        let fault = tokio::time::timeout(
            Duration::from_secs(10),
            watch(&heartbeat, &in_progress, Duration::from_millis(200), Some(Duration::from_millis(100))),
        )
        .await
        .expect("the watch ends");
        assert!(matches!(fault, Fault::RunHung(running) if running > Duration::from_millis(200)), "{fault:?}");
        drop(running);
        assert_eq!(in_progress.running_for(Instant::now()), None, "a run that ended is not in progress");
    }

    /// A heartbeat whose last tick was `ago`, allowed `at_most` of silence.
    fn silent_since(ago: Duration, at_most: Duration) -> Heartbeat {
        Heartbeat { last_tick: std::sync::Mutex::new(Instant::now() - ago), silent_at_most: at_most }
    }

    #[tokio::test]
    async fn a_stalled_schedule_ends_the_watch_at_its_second_check() {
        let heartbeat = silent_since(Duration::from_secs(120), Duration::from_secs(60));
        let fault = tokio::time::timeout(Duration::from_secs(10), watch(&heartbeat, &idle(), HOUR, Some(Duration::from_millis(100))))
            .await
            .expect("the watch ends");
        assert!(matches!(fault, Fault::Stalled(silent) if silent >= Duration::from_secs(120)), "{fault:?}");
    }

    #[tokio::test]
    async fn a_ticking_schedule_keeps_the_watch_going() {
        // Twenty checks, 50 ms apart (half the watchdog's timeout), none of them stalled.
        let heartbeat = silent_since(Duration::ZERO, Duration::from_secs(60));
        let idle = idle();
        let watching = tokio::time::timeout(Duration::from_secs(1), watch(&heartbeat, &idle, HOUR, Some(Duration::from_millis(100))));
        assert!(watching.await.is_err(), "the watch ended on a schedule that ticks");
    }

    #[tokio::test]
    async fn a_schedule_that_ticks_again_after_one_stalled_check_keeps_the_watch_going() {
        let heartbeat = Arc::new(silent_since(Duration::from_secs(120), Duration::from_secs(60)));
        let ticking = heartbeat.clone();
        // The first check comes at once and finds it stalled; the tick owed comes before the
        // second, 500 ms later.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            ticking.tick();
        });
        let idle = idle();
        let watching = tokio::time::timeout(Duration::from_secs(2), watch(&heartbeat, &idle, HOUR, Some(Duration::from_secs(1))));
        assert!(watching.await.is_err(), "a schedule held up once was taken for stalled");
    }

    #[test]
    fn a_schedule_that_never_runs_is_an_error() {
        let err = schedule_gap("0 0 0 30 2 *", Duration::from_secs(600)).unwrap_err();
        assert!(err.contains("never runs"), "{err}");
    }
}
