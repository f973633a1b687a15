//! How the process uses glibc's allocator: parsing on many threads and tables of Arrow
//! buffers released between statements left glibc holding memory the run no longer used.
//! Each setting was measured with `revokd-bench speed` (docs/speed.md).

/// Set once at start-up, before any other thread exists.
///
/// glibc gives each thread that allocates its own arena (up to 8 per core), and freed memory
/// stays in the arena that held it. Parsing runs on many short-lived blocking threads, so the
/// memory they freed was still counted when analysis peaked: one arena per core cut the
/// cold hour's peak RSS from ~820 MiB to ~690 MiB at the same speed.
///
/// glibc also raises its mmap threshold up to 32 MiB as large blocks are freed, after which
/// the Arrow buffers of every batch come from the arenas and leave them fragmented. Holding
/// the threshold at 1 MiB maps the large buffers on their own, handed back when freed: the
/// cold hour's peak went from ~485 to ~430 MiB at the same speed, and the incremental run
/// kept its speed (256 KiB saved ~50 MiB more but slowed the incremental run by ~15 %).
pub fn tune_allocator() {
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

/// Called after a large table is released. glibc keeps what it freed inside its arenas,
/// spread over thousands of batch-sized holes, and the process is charged for it until the
/// end of the run: handing it back after each release lowered the cold hour's peak RSS by
/// ~50 MiB at no measurable cost.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches no live
    // allocation and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
