use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    revokd::cli::main(revokd::cli::Cli::parse()).await
}
