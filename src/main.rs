use clap::Parser;

fn main() -> std::process::ExitCode {
    revokd::memory::tune_allocator();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(revokd::cli::main(revokd::cli::Cli::parse()))
}
