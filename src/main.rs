use clap::Parser;

fn main() -> std::process::ExitCode {
    tune_malloc();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(revokd::cli::main(revokd::cli::Cli::parse()))
}

/// glibc gives each thread that allocates its own arena (up to 8 per core), and freed memory
/// stays in the arena that held it. Parsing runs on many short-lived blocking threads, so the
/// memory they freed was still counted when analysis peaked: one arena per core cut the
/// cold hour's peak RSS from ~820 MiB to ~690 MiB at the same speed (`revokd-bench speed`).
///
/// glibc also raises its mmap threshold up to 32 MiB as large blocks are freed, after which
/// the Arrow buffers of every batch come from the arenas and leave them fragmented. Holding
/// the threshold at 1 MiB maps the large buffers on their own, handed back when freed: the
/// cold hour's peak went from ~485 to ~430 MiB at the same speed, and the incremental run
/// kept its speed (256 KiB saved ~50 MiB more but slowed the incremental run by ~15 %).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // SAFETY: mallopt only adjusts allocator tuning; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, cores as libc::c_int);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
        }
    }
}
