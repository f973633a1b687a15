//! The scheduler: runs on the configured cron schedule until SIGTERM/SIGINT. Runs never
//! overlap — a tick that finds the previous run still going is skipped with a warning — and
//! a run whose window starts after the last successful one's ended says which requests no
//! run analysed. systemd is told READY, STATUS and STOPPING through sd_notify (a no-op
//! outside systemd).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::run::{RunOptions, RunReport, Runtime, Unanalysed, run_once};

/// How long a stop waits for the run in progress before leaving it.
const STOP_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("scheduler: {0}")]
    Scheduler(#[from] tokio_cron_scheduler::JobSchedulerError),
    #[error("installing signal handler: {0}")]
    Signal(#[source] std::io::Error),
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
        Coverage { analysed_until, file: Some(file) }
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
        // Written aside and renamed: the record is always whole.
        let aside = file.with_extension("tmp");
        let written = file.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
            std::fs::write(&aside, until.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))?;
            std::fs::rename(&aside, file)
        });
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
    let mut report = run_once(rt, &RunOptions { now, last_analysed_until: coverage.analysed_until(), ..RunOptions::default() }).await;
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

    let rt = Arc::new(rt);
    let runs = Arc::new(Mutex::new(Coverage::kept_in(&rt.config.state_dir)));
    let mut scheduler = JobScheduler::new().await?;
    let (job_rt, job_runs) = (rt.clone(), runs.clone());
    let job = Job::new_async(rt.config.schedule.cron.as_str(), move |_, _| {
        let (rt, runs) = (job_rt.clone(), job_runs.clone());
        Box::pin(async move { tick(rt, runs).await })
    })?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    tracing::info!(cron = %rt.config.schedule.cron, lookback_s = rt.config.schedule.lookback.as_secs(), "daemon started");
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("waiting for the first run")]);
    if rt.config.schedule.run_on_start {
        tokio::spawn(tick(rt.clone(), runs.clone()));
    }

    let signal = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    tracing::info!(signal, "stopping");
    notify(&[sd_notify::NotifyState::Stopping]);
    scheduler.shutdown().await?;
    match tokio::time::timeout(STOP_GRACE, runs.lock()).await {
        Ok(_) => tracing::info!("stopped"),
        Err(_) => tracing::warn!(grace_s = STOP_GRACE.as_secs(), "run still in progress at stop; abandoned"),
    }
    Ok(())
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
    fn a_schedule_that_never_runs_is_an_error() {
        let err = schedule_gap("0 0 0 30 2 *", Duration::from_secs(600)).unwrap_err();
        assert!(err.contains("never runs"), "{err}");
    }
}
