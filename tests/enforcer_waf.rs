//! The WAF enforcer against moto, which enforces LockTokens like WAF does, with the
//! revocations it enforces in a real embedded store.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use aws_sdk_wafv2::types::{Rule, RuleAction, Scope, Statement, VisibilityConfig};
use chrono::{DateTime, TimeZone, Utc};
use common::*;
use revokd::config::{WafConfig, WafScope};
use revokd::enforcer::{self, BlockRule, EnforceError, ReplaceError, RuleGroup, Snapshot, wafv2::WafRuleGroup};
use revokd::store::embedded::EmbeddedStore;
use revokd::store::{EntryKind, Revocation, RevocationStore};

/// The real WAF backend, with another writer (an operator's script) changing the group right
/// after each of revokd's first `conflicts` fetches, so revokd's LockToken goes stale.
struct ContendedGroup {
    inner: WafRuleGroup,
    emu: Emulator,
    name: String,
    id: String,
    conflicts: u32,
    fetches: AtomicU32,
    /// Another revokd (an operator's `revoke`) that, just before revokd's first fetch,
    /// records this session and blocks it.
    revoked_before_first_fetch: Option<(String, Arc<EmbeddedStore>)>,
}

impl ContendedGroup {
    async fn someone_else_adds_a_rule(&self, n: u32) {
        let waf = self.emu.waf().await;
        let current = waf.get_rule_group().name(&self.name).id(&self.id).scope(Scope::Cloudfront).send().await.unwrap();
        let group = current.rule_group.unwrap();
        let mut rules = group.rules().to_vec();
        let statement =
            enforcer::wafv2::sdk_rule(&BlockRule { name: "x".into(), priority: 0, session_id: "geo".into() }).statement().cloned().unwrap();
        rules.push(
            Rule::builder()
                .name(format!("ops-rule-{n}"))
                .priority(100 + n as i32)
                .statement(Statement::clone(&statement))
                .action(RuleAction::builder().count(aws_sdk_wafv2::types::CountAction::builder().build()).build())
                .visibility_config(
                    VisibilityConfig::builder()
                        .sampled_requests_enabled(false)
                        .cloud_watch_metrics_enabled(false)
                        .metric_name("ops")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        );
        waf.update_rule_group()
            .name(&self.name)
            .id(&self.id)
            .scope(Scope::Cloudfront)
            .lock_token(current.lock_token.unwrap())
            .set_visibility_config(group.visibility_config().cloned())
            .set_rules(Some(rules))
            .send()
            .await
            .unwrap();
    }
}

#[async_trait]
impl RuleGroup for ContendedGroup {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn reserved_capacity(&self) -> u32 {
        self.inner.reserved_capacity()
    }
    async fn fetch(&self) -> Result<Snapshot, EnforceError> {
        if let Some((session, store)) = &self.revoked_before_first_fetch
            && self.fetches.load(Ordering::SeqCst) == 0
        {
            store.put_manual(&[revocation(session, EntryKind::Manual, None)]).await.unwrap();
            let outcome = enforcer::reconcile(&self.inner, store.as_ref(), now(), 5, false).await.unwrap();
            assert!(outcome.added.contains(session));
        }
        let snapshot = self.inner.fetch().await?;
        let n = self.fetches.fetch_add(1, Ordering::SeqCst);
        if n < self.conflicts {
            self.someone_else_adds_a_rule(n).await;
        }
        Ok(snapshot)
    }
    async fn replace(&self, snapshot: &Snapshot, owned: &[BlockRule]) -> Result<(), ReplaceError> {
        self.inner.replace(snapshot, owned).await
    }
}

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(T0, 0).unwrap()
}

fn revocation(id: &str, kind: EntryKind, score: Option<f64>) -> Revocation {
    let t = now();
    Revocation {
        session_id: id.into(),
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

async fn contended(conflicts: u32) -> ContendedGroup {
    let emu = emulator();
    let name = unique("revokd");
    let id = emu.rule_group(&name, 500).await;
    let config = WafConfig {
        name: name.clone(),
        id: id.clone(),
        scope: WafScope::Cloudfront,
        region: "us-east-1".into(),
        endpoint: Some(emu.endpoint.clone()),
        reserved_capacity: 0,
        max_update_attempts: 5,
    };
    ContendedGroup {
        inner: WafRuleGroup::connect(&config).await,
        emu,
        name,
        id,
        conflicts,
        fetches: AtomicU32::new(0),
        revoked_before_first_fetch: None,
    }
}

/// A revocation list holding `entries`, in a temporary directory kept as long as it is.
async fn store_with(entries: &[Revocation]) -> (tempfile::TempDir, Arc<EmbeddedStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("revocations.sqlite")).unwrap();
    store.put_manual(entries).await.unwrap();
    (dir, Arc::new(store))
}

#[tokio::test]
async fn stale_lock_token_is_fetched_again_and_retried_keeping_the_other_writers_rules() {
    let group = contended(1).await;
    let (_dir, store) = store_with(&[revocation("s1", EntryKind::Auto, Some(4.0)), revocation("m1", EntryKind::Manual, None)]).await;
    let outcome = enforcer::reconcile(&group, store.as_ref(), now(), 5, false).await.unwrap();
    assert_eq!(outcome.attempts, 2, "first attempt hit WAFOptimisticLockException");
    assert!(outcome.updated);
    let (_, rules) = group.emu.rules(&group.name, &group.id).await;
    let names: Vec<&str> = rules.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, vec!["ops-rule-0", "revokd-m1", "revokd-s1"], "the other writer's rule survives; ours follow it");
    assert_eq!(rules[1].1, 101, "our priorities start after the foreign ones");
}

#[tokio::test]
async fn lock_contention_gives_up_after_the_configured_attempts() {
    let group = contended(10).await;
    let (_dir, store) = store_with(&[revocation("s1", EntryKind::Auto, Some(4.0))]).await;
    let err = enforcer::reconcile(&group, store.as_ref(), now(), 2, false).await.unwrap_err();
    assert!(matches!(err, EnforceError::LockContention { attempts: 2, .. }), "{err}");
}

/// Two writers: revokd's run reconciles while an operator's `revoke` records a session and
/// blocks it just before the run fetches the group. The run's fetch then sees the new rule,
/// and its update, with a fresh lock token, succeeds: had the run read the list before its
/// fetch, its plan would lack the new session and that update would unblock it.
#[tokio::test]
async fn a_session_another_writer_blocked_just_before_our_fetch_stays_blocked() {
    let mut group = contended(0).await;
    let (_dir, store) = store_with(&[revocation("s1", EntryKind::Auto, Some(4.0))]).await;
    group.revoked_before_first_fetch = Some(("m-operator".to_string(), store.clone()));
    let outcome = enforcer::reconcile(&group, store.as_ref(), now(), 5, false).await.unwrap();
    let (_, rules) = group.emu.rules(&group.name, &group.id).await;
    let names: Vec<&str> = rules.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, vec!["revokd-m-operator", "revokd-s1"], "the operator's revocation is still blocked");
    assert_eq!(outcome.attempts, 1);
    assert_eq!(outcome.active, 2, "the run planned from the list as it was after the operator's write");
}
