//! The file backend (`enforcer.backend = "file"`): the rule group's rule list as JSON, exactly
//! what would be sent to WAF. For running without AWS, for review before switching to WAF, and
//! for pushing rules by other means. The file is replaced atomically; an edit made between
//! fetch and write is detected like WAF's lock token and the reconciliation starts over.

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
        if self.read().map_err(ReplaceError::Failed)? != state.content {
            return Err(ReplaceError::StaleLock);
        }
        let mut list: Vec<Value> = state.foreign.clone();
        list.extend(owned.iter().map(BlockRule::to_waf_json));
        list.sort_by_key(|v| v.get("Priority").and_then(Value::as_i64).unwrap_or(i64::MAX));
        let mut text = serde_json::to_vec_pretty(&list).expect("rules serialise");
        text.push(b'\n');
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ReplaceError::Failed(self.err(format!("creating {}: {e}", dir.display()))))?;
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, &text)
            .and_then(|_| std::fs::rename(&tmp, &self.path))
            .map_err(|e| ReplaceError::Failed(self.err(format!("cannot write: {e}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
