//! Logging: `tracing` events to stderr, as text or JSON lines. `RUST_LOG` refines the level.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The AWS SDK and DataFusion are chatty at info; their warnings still show.
const DEFAULT_FILTER: &str =
    "info,aws_config=warn,aws_smithy_runtime=warn,aws_sdk_dynamodb=warn,aws_sdk_wafv2=warn,datafusion=warn,tokio_cron_scheduler=warn";

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // journald stamps each line itself, and shows no colours.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
        LogFormat::Text if under_journald => builder.with_ansi(false).without_time().init(),
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
}

/// Whether interactive output (a progress bar) suits this process.
pub fn interactive(format: LogFormat) -> bool {
    format == LogFormat::Text
        && std::env::var_os("JOURNAL_STREAM").is_none()
        && std::env::var_os("INVOCATION_ID").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_logs_never_get_a_progress_bar() {
        // JSON logs go to collectors, whatever stderr is connected to.
        assert!(!interactive(LogFormat::Json));
    }
}
