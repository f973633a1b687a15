//! The file backend (`enforcer.backend = "file"`): the rule group's rule list as JSON, exactly
//! what would be sent to WAF. For running without AWS, for review before switching to WAF, and
//! for pushing rules by other means. The file is replaced atomically; an edit made between
//! fetch and write is detected like WAF's lock token and the reconciliation starts over.
//! revokd processes sharing the file (the daemon, an operator's `revoke`) take turns to
//! compare and write, under an exclusive lock on `<file>.lock`.

use std::fs::File;
use std::path::PathBuf;

use async_trait::async_trait;
use serde_json::Value;

use super::{BlockRule, EnforceError, ObservedRule, RULE_NAME_PREFIX, ReplaceError, RuleGroup, Snapshot};

pub struct FileRuleGroup {
    path: PathBuf,
    capacity: u32,
}

/// What a fetch read, to write back and to detect concurrent edits.
struct FileState {
    content: Option<Vec<u8>>,
    foreign: Vec<Value>,
}

impl FileRuleGroup {
    pub fn new(path: PathBuf, capacity: u32) -> Self {
        FileRuleGroup { path, capacity }
    }

    fn err(&self, message: String) -> EnforceError {
        EnforceError::File { path: self.path.display().to_string(), message }
    }

    /// Waits for the other revokd processes using this file to finish their write.
    async fn take_turn(&self) -> Result<File, EnforceError> {
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.err(format!("creating {}: {e}", dir.display())))?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.err(format!("cannot open {}: {e}", lock_path.display())))?;
        let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file)).await.expect("lock task does not panic");
        locked.map_err(|e| self.err(format!("cannot lock {}: {e}", lock_path.display())))
    }

    fn read(&self) -> Result<Option<Vec<u8>>, EnforceError> {
        match std::fs::read(&self.path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(format!("cannot read: {e}"))),
        }
    }
}

/// Classifies one rule of the file.
fn observe(value: &Value, index: usize) -> Result<ObservedRule, String> {
    let name = value.get("Name").and_then(Value::as_str).ok_or_else(|| format!("rule #{index} has no string `Name`"))?;
    let priority = value.get("Priority").and_then(Value::as_i64).ok_or_else(|| format!("rule `{name}` has no integer `Priority`"))? as i32;
    if !name.starts_with(RULE_NAME_PREFIX) {
        return Ok(ObservedRule::Foreign { name: name.to_string(), priority });
    }
    // Ours only if it is byte for byte what we would write for that session.
    let session = value
        .pointer("/Statement/ByteMatchStatement/SearchString")
        .and_then(Value::as_str)
        .and_then(|s| s.strip_prefix('/'))
        .and_then(|s| s.strip_suffix('.'));
    if let Some(session_id) = session {
        let rule = BlockRule { name: name.to_string(), priority, session_id: session_id.to_string() };
        if &rule.to_waf_json() == value {
            return Ok(ObservedRule::Owned(rule));
        }
    }
    Ok(ObservedRule::Drifted { name: name.to_string(), priority })
}

#[async_trait]
impl RuleGroup for FileRuleGroup {
    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }

    fn reserved_capacity(&self) -> u32 {
        0
    }

    async fn fetch(&self) -> Result<Snapshot, EnforceError> {
        let content = self.read()?;
        let mut rules = Vec::new();
        let mut foreign = Vec::new();
        if let Some(bytes) = &content {
            // A file we cannot read is an error, never overwritten: it may hold others' rules.
            let list: Vec<Value> = serde_json::from_slice(bytes).map_err(|e| self.err(format!("not a JSON array of WAF rules: {e}")))?;
            for (i, value) in list.into_iter().enumerate() {
                let observed = observe(&value, i).map_err(|m| self.err(m))?;
                if matches!(observed, ObservedRule::Foreign { .. }) {
                    foreign.push(value);
                }
                rules.push(observed);
            }
        }
        // Foreign rules' WCU cannot be computed from the file; the configured capacity is
        // what revokd may use.
        Ok(Snapshot { capacity: self.capacity, rules, state: Box::new(FileState { content, foreign }) })
    }

    async fn replace(&self, snapshot: &Snapshot, owned: &[BlockRule]) -> Result<(), ReplaceError> {
        let state = snapshot.state.downcast_ref::<FileState>().expect("snapshot from this backend");
        // Held until the new file is in place: another revokd process comparing in between
        // would find the old content and write over ours.
        let _turn = self.take_turn().await.map_err(ReplaceError::Failed)?;
        if self.read().map_err(ReplaceError::Failed)? != state.content {
            return Err(ReplaceError::StaleLock);
        }
        let mut list: Vec<Value> = state.foreign.clone();
        list.extend(owned.iter().map(BlockRule::to_waf_json));
        list.sort_by_key(|v| v.get("Priority").and_then(Value::as_i64).unwrap_or(i64::MAX));
        let mut text = serde_json::to_vec_pretty(&list).expect("rules serialise");
        text.push(b'\n');
        crate::atomic_file::replace(&self.path, &text).map_err(|e| ReplaceError::Failed(self.err(format!("cannot write: {e}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another revokd process (the daemon, an operator's `revoke`) is between its comparison
    /// and its rename: our write waits for it to finish, then finds the file changed and
    /// starts over instead of renaming a stale list over the other's.
    #[tokio::test]
    async fn a_write_waits_for_another_process_writing_and_then_sees_its_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rule-group.json");
        let group = FileRuleGroup::new(path.clone(), 100);
        let snapshot = group.fetch().await.unwrap();
        let other = File::options().create(true).truncate(false).write(true).open(dir.path().join("rule-group.json.lock")).unwrap();
        other.lock().unwrap();
        let ours = tokio::spawn(async move {
            let rule = BlockRule { name: "revokd-ours".into(), priority: 0, session_id: "ours".into() };
            group.replace(&snapshot, &[rule]).await
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let theirs = BlockRule { name: "revokd-theirs".into(), priority: 0, session_id: "theirs".into() };
        std::fs::write(&path, serde_json::to_vec(&[theirs.to_waf_json()]).unwrap()).unwrap();
        drop(other);
        assert!(matches!(ours.await.unwrap(), Err(ReplaceError::StaleLock)), "ours must not overwrite theirs");
        assert!(String::from_utf8(std::fs::read(&path).unwrap()).unwrap().contains("/theirs."));
    }

    #[test]
    fn our_rule_round_trips_and_an_edited_one_is_drift() {
        let rule = BlockRule { name: "revokd-s1".into(), priority: 3, session_id: "s1".into() };
        assert_eq!(observe(&rule.to_waf_json(), 0).unwrap(), ObservedRule::Owned(rule.clone()));
        let mut edited = rule.to_waf_json();
        edited["Action"] = serde_json::json!({ "Count": {} });
        assert!(matches!(observe(&edited, 0).unwrap(), ObservedRule::Drifted { .. }));
        let foreign = serde_json::json!({ "Name": "geo-block", "Priority": 0 });
        assert!(matches!(observe(&foreign, 0).unwrap(), ObservedRule::Foreign { .. }));
    }
}
