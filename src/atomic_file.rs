//! Files replaced whole (the parse cache, the rule-group file, `analysed-until`): written
//! beside their final name, then renamed over it, so that a reader never finds one half
//! written.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where to write what will replace `path`: beside it, so the rename stays on one file
/// system, under a name of this process's and this call's own. Two revokd processes
/// replacing the same file (a daemon's run and an ad-hoc one parsing the same new object)
/// would otherwise write into one temporary file at once and rename the mixture.
pub fn aside(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}-{}.tmp", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    PathBuf::from(name)
}

/// Writes `written` (which creates the file it is given) beside `path` and renames it over
/// `path`; on failure the temporary file is removed.
pub fn replace_with(path: &Path, written: impl FnOnce(&Path) -> std::io::Result<()>) -> std::io::Result<()> {
    let tmp = aside(path);
    let result = written(&tmp).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`replace_with`] for bytes.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_with(path, |tmp| std::fs::write(tmp, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replacement_writes_its_own_temporary_file_and_leaves_none_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("analysed-until");
        assert_ne!(aside(&path), aside(&path), "two writers at once never share a temporary file");
        replace(&path, b"one").unwrap();
        replace(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let failed = replace_with(&path, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"two", "a failed write leaves the file as it was");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["analysed-until"]);
    }
}
