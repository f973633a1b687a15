//! The scheduler: runs on the configured cron schedule until SIGTERM/SIGINT. Runs never
//! overlap — a tick that finds the previous run still going is skipped with a warning — and
//! systemd is told READY, STATUS and STOPPING through sd_notify (a no-op outside systemd).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::run::{RunOptions, Runtime, run_once};

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

fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// One scheduled run, unless a run is already in progress: then `None`, with a warning.
pub async fn scheduled_run(rt: &Runtime, running: &Mutex<()>) -> Option<crate::run::RunReport> {
    let Ok(_guard) = running.try_lock() else {
        tracing::warn!("previous run still in progress; skipping this scheduled run");
        return None;
    };
    let report = run_once(rt, &RunOptions::default()).await;
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

async fn tick(rt: Arc<Runtime>, running: Arc<Mutex<()>>) {
    scheduled_run(&rt, &running).await;
}

pub async fn run_daemon(rt: Runtime) -> Result<(), DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;

    let rt = Arc::new(rt);
    let running = Arc::new(Mutex::new(()));
    let mut scheduler = JobScheduler::new().await?;
    let (job_rt, job_running) = (rt.clone(), running.clone());
    let job = Job::new_async(rt.config.schedule.cron.as_str(), move |_, _| {
        let (rt, running) = (job_rt.clone(), job_running.clone());
        Box::pin(async move { tick(rt, running).await })
    })?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    tracing::info!(cron = %rt.config.schedule.cron, lookback_s = rt.config.schedule.lookback.as_secs(), "daemon started");
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("waiting for the first run")]);
    if rt.config.schedule.run_on_start {
        tokio::spawn(tick(rt.clone(), running.clone()));
    }

    let signal = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    tracing::info!(signal, "stopping");
    notify(&[sd_notify::NotifyState::Stopping]);
    scheduler.shutdown().await?;
    match tokio::time::timeout(STOP_GRACE, running.lock()).await {
        Ok(_) => tracing::info!("stopped"),
        Err(_) => tracing::warn!(grace_s = STOP_GRACE.as_secs(), "run still in progress at stop; abandoned"),
    }
    Ok(())
}
