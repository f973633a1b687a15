//! Enforcer: makes a WAF rule group (or a file holding the same rule list) block exactly the
//! sessions that are revoked now.
//!
//! The desired list is computed here, once, for both backends: MANUAL entries first, then AUTO
//! by score, as many as the capacity holds; one Block rule per session, matching the URI path
//! `STARTS_WITH "/<session_id>."` (the dot keeps `abc` from also blocking `abcd…`). Names and
//! priorities are deterministic (MANUAL first, then by id), so the same sessions give the same
//! list, whatever their scores, and cost no update.
//! Rules revokd does not own (names without the `revokd-` prefix) are carried over untouched.

pub mod file;
pub mod wafv2;

use std::any::Any;
use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;

use crate::retry::Backoff;
use crate::session::SessionId;
use crate::store::{EntryKind, Revocation, RevocationStore, StoreError};

/// AWS's limit on a rule group's capacity.
pub const MAX_RULE_GROUP_CAPACITY: u32 = 5000;
/// A STARTS_WITH byte match on the URI path with no text transformation.
pub const WCU_PER_RULE: u32 = 2;
/// Rules whose name starts with this belong to revokd.
pub const RULE_NAME_PREFIX: &str = "revokd-";
/// WAF's limits on a rule name and a byte-match search string.
const MAX_RULE_NAME: usize = 128;
pub const MAX_SEARCH_STRING: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("rule group file {path}: {message}")]
    File { path: String, message: String },
    #[error("WAF rule group {group}: {operation}: {message}")]
    Waf { group: String, operation: &'static str, message: String },
    #[error("rule group {group}: still changed by someone else after {attempts} attempts (optimistic lock)")]
    LockContention { group: String, attempts: u32 },
    #[error("reading the revocations to enforce: {0}")]
    Store(#[from] StoreError),
}

/// One revokd rule: block requests whose URI path starts with `/<session_id>.`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlockRule {
    pub name: String,
    pub priority: i32,
    pub session_id: String,
}

impl BlockRule {
    pub fn search_string(&self) -> String {
        format!("/{}.", self.session_id)
    }

    /// The rule in WAF's JSON form: what `aws wafv2 update-rule-group --rules` takes (with
    /// `--cli-binary-format raw-in-base64-out`) and what the file backend writes.
    pub fn to_waf_json(&self) -> serde_json::Value {
        serde_json::json!({
            "Name": self.name,
            "Priority": self.priority,
            "Statement": {
                "ByteMatchStatement": {
                    "SearchString": self.search_string(),
                    "FieldToMatch": { "UriPath": {} },
                    "TextTransformations": [{ "Priority": 0, "Type": "NONE" }],
                    "PositionalConstraint": "STARTS_WITH"
                }
            },
            "Action": { "Block": {} },
            "VisibilityConfig": {
                "SampledRequestsEnabled": true,
                // Per-rule metrics would be one CloudWatch metric per revoked session; the
                // rule group's own metric counts the blocks.
                "CloudWatchMetricsEnabled": false,
                "MetricName": self.name
            }
        })
    }
}

/// A rule found in the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservedRule {
    /// A revokd rule exactly as revokd writes it.
    Owned(BlockRule),
    /// A rule with revokd's name prefix that someone edited: it will be rewritten.
    Drifted { name: String, priority: i32 },
    /// Someone else's rule: kept as it is.
    Foreign { name: String, priority: i32 },
}

/// The rule group as one fetch saw it.
pub struct Snapshot {
    /// Total capacity of the group, in WCU.
    pub capacity: u32,
    pub rules: Vec<ObservedRule>,
    /// What the backend needs to write back (lock token, rules it does not parse, …).
    pub state: Box<dyn Any + Send + Sync>,
}

pub enum ReplaceError {
    /// The group changed since the snapshot (WAFOptimisticLockException): fetch again.
    StaleLock,
    Failed(EnforceError),
}

/// A rule group backend: the WAF API, or a JSON file.
#[async_trait]
pub trait RuleGroup: Send + Sync {
    fn describe(&self) -> String;
    /// WCU kept for rules revokd does not own.
    fn reserved_capacity(&self) -> u32;
    async fn fetch(&self) -> Result<Snapshot, EnforceError>;
    /// Writes the group's rule list: the snapshot's foreign rules plus `owned`.
    async fn replace(&self, snapshot: &Snapshot, owned: &[BlockRule]) -> Result<(), ReplaceError>;
}

/// Opens the configured backend.
pub async fn open(config: &crate::config::Config) -> Box<dyn RuleGroup> {
    match &config.enforcer {
        crate::config::EnforcerConfig::File { path, capacity } => Box::new(file::FileRuleGroup::new(path.clone(), *capacity)),
        crate::config::EnforcerConfig::Wafv2(w) => Box::new(wafv2::WafRuleGroup::connect(w).await),
    }
}

/// The desired revokd rules for a set of active revocations.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub rules: Vec<BlockRule>,
    /// Revoked sessions left out for lack of capacity, lowest priority first dropped.
    pub did_not_fit: Vec<String>,
    /// Entries whose session id may not reach WAF.
    pub rejected: Vec<String>,
}

pub fn rule_name(session_id: &str) -> String {
    let name = format!("{RULE_NAME_PREFIX}{session_id}");
    if name.len() <= MAX_RULE_NAME {
        return name;
    }
    // Long ids keep a readable head and a stable hash of the whole id, to stay unique.
    let hash = fnv1a(session_id.as_bytes());
    format!("{RULE_NAME_PREFIX}{}-{hash:016x}", &session_id[..MAX_RULE_NAME - RULE_NAME_PREFIX.len() - 17])
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Computes the rules for `active` within `capacity` WCU, numbered after `first_priority`.
pub fn plan_rules(active: &[Revocation], capacity: u32, first_priority: i32) -> Plan {
    let mut rejected = Vec::new();
    let mut entries: Vec<&Revocation> = Vec::new();
    let mut seen = BTreeSet::new();
    for r in active {
        if let Err(e) = SessionId::parse(&r.session_id) {
            tracing::warn!(session_id = %r.session_id.escape_debug(), error = %e, "revocation not sent to WAF: invalid session id");
            rejected.push(r.session_id.clone());
            continue;
        }
        if r.kind.revokes() && seen.insert(r.session_id.as_str()) {
            entries.push(r);
        }
    }
    // What fits: MANUAL first, the oldest first, so that an operator's new revocation never
    // unblocks one made before it (the new one is reported as not fitting instead); then AUTO
    // by score, highest first. Ties by id so the choice is deterministic.
    let rank = |r: &Revocation| if r.kind == EntryKind::Manual { 0 } else { 1 };
    entries.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then_with(|| match a.kind {
                EntryKind::Manual => a.first_seen.cmp(&b.first_seen),
                _ => b.score.unwrap_or(f64::NEG_INFINITY).total_cmp(&a.score.unwrap_or(f64::NEG_INFINITY)),
            })
            .then_with(|| a.session_id.cmp(&b.session_id))
    });
    let fits = (capacity / WCU_PER_RULE) as usize;
    let did_not_fit = entries.iter().skip(fits).map(|r| r.session_id.clone()).collect();
    let mut kept: Vec<&Revocation> = entries.into_iter().take(fits).collect();
    // In the group: MANUAL first, then by id, not by score. A request matches at most one of
    // these rules, so their order blocks nothing differently, and scores move at every run
    // that renews a revocation: ordered by score, the same sessions would cost an
    // UpdateRuleGroup call whenever two of them swapped places.
    kept.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.session_id.cmp(&b.session_id)));
    let rules = kept
        .iter()
        .zip(first_priority..)
        .map(|(r, priority)| BlockRule { name: rule_name(&r.session_id), priority, session_id: r.session_id.clone() })
        .collect();
    Plan { rules, did_not_fit, rejected }
}

/// What a reconciliation did (or, in a dry run, would do).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct EnforceOutcome {
    /// Sessions whose rule was added.
    pub added: Vec<String>,
    /// Sessions whose rule was removed (expired, unrevoked, or pushed out by capacity).
    pub removed: Vec<String>,
    /// revokd rules in the group afterwards.
    pub rules: usize,
    /// Revoked sessions left out for lack of capacity, highest ranked first.
    pub did_not_fit: Vec<String>,
    /// Revocations whose session id was not sent to WAF.
    pub rejected: usize,
    /// Whether the group was written (false when already right, or in a dry run).
    pub updated: bool,
    /// Whether the list differs from what is in the group.
    pub changed: bool,
    pub attempts: u32,
    /// Revocations in force when the rules were planned.
    pub active: usize,
}

/// Brings the group in line with the revocations `store` holds in force at `now`, retrying
/// on optimistic-lock conflicts.
pub async fn reconcile(
    group: &dyn RuleGroup,
    store: &dyn RevocationStore,
    now: chrono::DateTime<chrono::Utc>,
    max_attempts: u32,
    dry_run: bool,
) -> Result<EnforceOutcome, EnforceError> {
    // WAF allows about one update per second per account: never retry faster than that.
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(16));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let snapshot = group.fetch().await?;
        // The list is read after the group, never before: another writer (an operator's
        // `revoke`, a second host's daemon) records its entries before it updates the group,
        // so an update that came before this fetch has its entries in this read, and one
        // that comes after it makes our write fail on the lock and start over. Read first,
        // a plan could miss an entry whose rule the group already holds, and remove it.
        let active = store.active(now).await?;
        let (outcome, plan) = compare(&snapshot, group.reserved_capacity(), &active);
        let outcome = EnforceOutcome { attempts: attempt, active: active.len(), ..outcome };
        if !outcome.changed || dry_run {
            return Ok(outcome);
        }
        match group.replace(&snapshot, &plan.rules).await {
            Ok(()) => return Ok(EnforceOutcome { updated: true, ..outcome }),
            Err(ReplaceError::StaleLock) if attempt < max_attempts => {
                let delay = backoff.next_delay();
                tracing::info!(group = %group.describe(), attempt, delay_ms = delay.as_millis() as u64, "rule group changed under us; fetching again");
                tokio::time::sleep(delay).await;
            }
            Err(ReplaceError::StaleLock) => {
                return Err(EnforceError::LockContention { group: group.describe(), attempts: attempt });
            }
            Err(ReplaceError::Failed(e)) => return Err(e),
        }
    }
}

/// Plans against a snapshot and says what would change.
pub fn compare(snapshot: &Snapshot, reserved: u32, active: &[Revocation]) -> (EnforceOutcome, Plan) {
    let first_priority = snapshot
        .rules
        .iter()
        .filter_map(|r| match r {
            ObservedRule::Foreign { priority, .. } => Some(priority + 1),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let capacity = snapshot.capacity.saturating_sub(reserved);
    let plan = plan_rules(active, capacity, first_priority);
    let mut current: Vec<&ObservedRule> = snapshot.rules.iter().filter(|r| !matches!(r, ObservedRule::Foreign { .. })).collect();
    current.sort_by_key(|r| match r {
        ObservedRule::Owned(b) => b.priority,
        ObservedRule::Drifted { priority, .. } | ObservedRule::Foreign { priority, .. } => *priority,
    });
    let unchanged = current.len() == plan.rules.len()
        && current.iter().zip(&plan.rules).all(|(c, want)| matches!(c, ObservedRule::Owned(have) if have == want));
    let before: BTreeSet<&str> = current
        .iter()
        .filter_map(|r| match r {
            ObservedRule::Owned(b) => Some(b.session_id.as_str()),
            _ => None,
        })
        .collect();
    let after: BTreeSet<&str> = plan.rules.iter().map(|r| r.session_id.as_str()).collect();
    let outcome = EnforceOutcome {
        added: after.difference(&before).map(|s| s.to_string()).collect(),
        removed: before.difference(&after).map(|s| s.to_string()).collect(),
        rules: plan.rules.len(),
        did_not_fit: plan.did_not_fit.clone(),
        rejected: plan.rejected.len(),
        updated: false,
        changed: !unchanged,
        attempts: 0,
        active: 0,
    };
    (outcome, plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn rev(id: &str, kind: EntryKind, score: Option<f64>) -> Revocation {
        let t = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        Revocation {
            session_id: id.to_string(),
            kind,
            reason: String::new(),
            score,
            signals: Default::default(),
            first_seen: t,
            last_updated: t,
            expires_at: t + chrono::Duration::hours(1),
            run_id: None,
        }
    }

    fn snapshot(capacity: u32, rules: Vec<ObservedRule>) -> Snapshot {
        Snapshot { capacity, rules, state: Box::new(()) }
    }

    #[test]
    fn manual_first_then_auto_by_id_with_deterministic_names_and_priorities() {
        let active = vec![
            rev("zeta", EntryKind::Auto, Some(9.0)),
            rev("man", EntryKind::Manual, None),
            rev("alpha", EntryKind::Auto, Some(2.5)),
            rev("aaa-manual", EntryKind::Manual, None),
        ];
        let plan = plan_rules(&active, 100, 10);
        let got: Vec<(&str, i32, &str)> = plan.rules.iter().map(|r| (r.name.as_str(), r.priority, r.session_id.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("revokd-aaa-manual", 10, "aaa-manual"),
                ("revokd-man", 11, "man"),
                ("revokd-alpha", 12, "alpha"),
                ("revokd-zeta", 13, "zeta")
            ]
        );
    }

    #[test]
    fn capacity_keeps_manual_and_highest_scores_and_counts_the_rest() {
        let active = vec![
            rev("a1", EntryKind::Auto, Some(3.0)),
            rev("a2", EntryKind::Auto, Some(4.0)),
            rev("a3", EntryKind::Auto, Some(5.0)),
            rev("m", EntryKind::Manual, None),
        ];
        // 7 WCU: three rules of 2 WCU.
        let plan = plan_rules(&active, 7, 0);
        let ids: Vec<&str> = plan.rules.iter().map(|r| r.session_id.as_str()).collect();
        assert_eq!(ids, vec!["m", "a2", "a3"]);
        assert_eq!(plan.did_not_fit, vec!["a1".to_string()]);
    }

    #[test]
    fn a_group_full_of_manual_revocations_keeps_the_older_ones_blocked() {
        let older = rev("zz-older", EntryKind::Manual, None);
        let newer = Revocation { first_seen: older.first_seen + chrono::Duration::minutes(5), ..rev("aa-newer", EntryKind::Manual, None) };
        let plan = plan_rules(&[newer, older], 2, 0);
        let ids: Vec<&str> = plan.rules.iter().map(|r| r.session_id.as_str()).collect();
        assert_eq!(ids, vec!["zz-older"], "a new revocation does not push out one made before it");
        assert_eq!(plan.did_not_fit, vec!["aa-newer".to_string()]);
    }

    #[test]
    fn the_same_sessions_rescored_need_no_update() {
        let before = vec![rev("s1", EntryKind::Auto, Some(3.0)), rev("s2", EntryKind::Auto, Some(5.0))];
        let snap = snapshot(100, plan_rules(&before, 100, 0).rules.into_iter().map(ObservedRule::Owned).collect());
        let rescored = vec![rev("s1", EntryKind::Auto, Some(9.0)), rev("s2", EntryKind::Auto, Some(1.5))];
        let (outcome, _) = compare(&snap, 0, &rescored);
        assert!(!outcome.changed, "{outcome:?}");
    }

    #[test]
    fn invalid_session_ids_never_reach_a_rule() {
        let active =
            vec![rev("ok", EntryKind::Manual, None), rev("bad/../id", EntryKind::Manual, None), rev("", EntryKind::Auto, Some(5.0))];
        let plan = plan_rules(&active, 100, 0);
        assert_eq!(plan.rules.len(), 1);
        assert_eq!(plan.rejected.len(), 2);
    }

    #[test]
    fn search_string_ends_with_a_dot_so_prefixes_of_other_ids_do_not_match() {
        let rule = &plan_rules(&[rev("abc", EntryKind::Manual, None)], 10, 0).rules[0];
        assert_eq!(rule.search_string(), "/abc.");
        assert!(!"/abcd.h.p.s/seg.ts".starts_with(&rule.search_string()));
        assert!("/abc.h.p.s/seg.ts".starts_with(&rule.search_string()));
    }

    #[test]
    fn longest_ids_fit_waf_limits_and_stay_distinct() {
        let a = "a".repeat(128);
        let b = format!("{}b", "a".repeat(127));
        assert!(rule_name(&a).len() <= MAX_RULE_NAME);
        assert_ne!(rule_name(&a), rule_name(&b));
        let rule = &plan_rules(&[rev(&a, EntryKind::Manual, None)], 10, 0).rules[0];
        assert!(rule.search_string().len() <= MAX_SEARCH_STRING);
    }

    #[test]
    fn unchanged_list_needs_no_update() {
        let active = vec![rev("s1", EntryKind::Auto, Some(3.0))];
        let plan = plan_rules(&active, 100, 0);
        let snap = snapshot(100, plan.rules.iter().cloned().map(ObservedRule::Owned).collect());
        let (outcome, _) = compare(&snap, 0, &active);
        assert!(!outcome.changed);
        assert!(outcome.added.is_empty() && outcome.removed.is_empty());
    }

    // moto keeps the old rules when UpdateRuleGroup is sent an empty list, so the emptying of
    // the group is asserted here, on the plan that is sent.
    #[test]
    fn no_active_revocation_empties_our_rules_and_keeps_foreign_ones() {
        let foreign = ObservedRule::Foreign { name: "rate-limit".into(), priority: 0 };
        let ours = ObservedRule::Owned(BlockRule { name: "revokd-old".into(), priority: 1, session_id: "old".into() });
        let snap = snapshot(100, vec![foreign, ours]);
        let (outcome, plan) = compare(&snap, 0, &[]);
        assert!(outcome.changed);
        assert!(plan.rules.is_empty());
        assert_eq!(outcome.removed, vec!["old".to_string()]);
    }

    // moto does not check capacity: the budget arithmetic is asserted here.
    #[test]
    fn reserved_capacity_for_foreign_rules_reduces_our_budget() {
        let active: Vec<Revocation> = (0..10).map(|i| rev(&format!("s{i}"), EntryKind::Auto, Some(i as f64))).collect();
        let snap = snapshot(20, vec![ObservedRule::Foreign { name: "geo".into(), priority: 7 }]);
        let (outcome, plan) = compare(&snap, 10, &active);
        assert_eq!(plan.rules.len(), 5);
        assert_eq!(outcome.did_not_fit.len(), 5);
        assert_eq!(plan.rules[0].priority, 8, "our rules come after the foreign priorities");
        let kept: Vec<&str> = plan.rules.iter().map(|r| r.session_id.as_str()).collect();
        assert_eq!(kept, ["s5", "s6", "s7", "s8", "s9"], "the highest scores");
    }

    #[test]
    fn drifted_rule_is_rewritten() {
        let active = vec![rev("s1", EntryKind::Auto, Some(3.0))];
        let snap = snapshot(100, vec![ObservedRule::Drifted { name: "revokd-s1".into(), priority: 0 }]);
        let (outcome, _) = compare(&snap, 0, &active);
        assert!(outcome.changed);
    }
}
