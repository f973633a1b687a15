//! Who owns the files revokd writes, and who is running it. The service runs as its own
//! user; an operator's command run as someone else either leaves files the service cannot
//! write (as root) or cannot write what the service made: both are told whom to run as.

use std::path::Path;

/// The user this process acts as.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The owner of `path`, if it exists.
pub fn owner(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| m.uid()).ok()
}

/// What to do about files `owner` owns: run as them.
pub fn run_as(owner: u32) -> String {
    format!("run revokd as its owner, e.g. `sudo -u '#{owner}' revokd …`")
}
