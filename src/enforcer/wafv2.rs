//! The WAFv2 backend (`enforcer.backend = "wafv2"`): an existing rule group, attached by the
//! operator to the distribution's web ACL. revokd replaces the group's rule list (WAF has no
//! partial update) with the LockToken of the GetRuleGroup it planned from.

use async_trait::async_trait;
use aws_sdk_wafv2::Client;
use aws_sdk_wafv2::error::ProvideErrorMetadata;
use aws_sdk_wafv2::operation::update_rule_group::UpdateRuleGroupError;
use aws_sdk_wafv2::primitives::Blob;
use aws_sdk_wafv2::types::{
    BlockAction, ByteMatchStatement, FieldToMatch, PositionalConstraint, Rule, RuleAction, RuleGroup as SdkRuleGroup, Scope, Statement,
    TextTransformation, TextTransformationType, UriPath, VisibilityConfig,
};

use super::{BlockRule, EnforceError, ObservedRule, RULE_NAME_PREFIX, ReplaceError, RuleGroup, Snapshot};
use crate::aws::describe_error as describe;
use crate::config::{WafConfig, WafScope};

pub struct WafRuleGroup {
    client: Client,
    name: String,
    id: String,
    scope: Scope,
    reserved_capacity: u32,
}

struct WafState {
    lock_token: String,
    group: SdkRuleGroup,
}

/// The WAF rule for a revokd rule, as sent and as expected back.
pub fn sdk_rule(rule: &BlockRule) -> Rule {
    let statement = Statement::builder()
        .byte_match_statement(
            ByteMatchStatement::builder()
                .search_string(Blob::new(rule.search_string().into_bytes()))
                .field_to_match(FieldToMatch::builder().uri_path(UriPath::builder().build()).build())
                .text_transformations(
                    TextTransformation::builder().priority(0).r#type(TextTransformationType::None).build().expect("priority and type set"),
                )
                .positional_constraint(PositionalConstraint::StartsWith)
                .build()
                .expect("required fields set"),
        )
        .build();
    Rule::builder()
        .name(&rule.name)
        .priority(rule.priority)
        .statement(statement)
        .action(RuleAction::builder().block(BlockAction::builder().build()).build())
        .visibility_config(
            VisibilityConfig::builder()
                .sampled_requests_enabled(true)
                .cloud_watch_metrics_enabled(false)
                .metric_name(&rule.name)
                .build()
                .expect("required fields set"),
        )
        .build()
        .expect("required fields set")
}

fn observe(rule: &Rule) -> ObservedRule {
    let (name, priority) = (rule.name().to_string(), rule.priority());
    if !name.starts_with(RULE_NAME_PREFIX) {
        return ObservedRule::Foreign { name, priority };
    }
    let session = rule
        .statement()
        .and_then(|s| s.byte_match_statement())
        .and_then(|b| std::str::from_utf8(b.search_string().as_ref()).ok())
        .and_then(|s| s.strip_prefix('/'))
        .and_then(|s| s.strip_suffix('.'));
    if let Some(session_id) = session {
        let ours = BlockRule { name: name.clone(), priority, session_id: session_id.to_string() };
        if &sdk_rule(&ours) == rule {
            return ObservedRule::Owned(ours);
        }
    }
    ObservedRule::Drifted { name, priority }
}

impl WafRuleGroup {
    pub async fn connect(config: &WafConfig) -> WafRuleGroup {
        let sdk = crate::aws::sdk_config(Some(&config.region), config.endpoint.as_deref()).await;
        WafRuleGroup {
            client: Client::new(&sdk),
            name: config.name.clone(),
            id: config.id.clone(),
            scope: match config.scope {
                WafScope::Cloudfront => Scope::Cloudfront,
                WafScope::Regional => Scope::Regional,
            },
            reserved_capacity: config.reserved_capacity,
        }
    }

    fn err(&self, operation: &'static str, message: String) -> EnforceError {
        EnforceError::Waf { group: self.describe(), operation, message }
    }
}

#[async_trait]
impl RuleGroup for WafRuleGroup {
    fn describe(&self) -> String {
        format!("wafv2:{}/{}/{}", self.scope.as_str(), self.name, self.id)
    }

    fn reserved_capacity(&self) -> u32 {
        self.reserved_capacity
    }

    async fn fetch(&self) -> Result<Snapshot, EnforceError> {
        let out = self
            .client
            .get_rule_group()
            .name(&self.name)
            .scope(self.scope.clone())
            .id(&self.id)
            .send()
            .await
            .map_err(|e| {
                let mut message = describe(&e);
                // What a new install meets first: say what to check.
                if e.code() == Some("WAFNonexistentItemException") {
                    message.push_str(
                        " (no rule group with this name, id and scope: check `enforcer.wafv2`; a CLOUDFRONT group is created in us-east-1, see README \"AWS setup\")",
                    );
                }
                self.err("GetRuleGroup", message)
            })?;
        let group = out.rule_group.ok_or_else(|| self.err("GetRuleGroup", "response has no RuleGroup".into()))?;
        let lock_token = out.lock_token.ok_or_else(|| self.err("GetRuleGroup", "response has no LockToken".into()))?;
        let rules = group.rules().iter().map(observe).collect();
        let capacity = u32::try_from(group.capacity()).unwrap_or(0).min(super::MAX_RULE_GROUP_CAPACITY);
        Ok(Snapshot { capacity, rules, state: Box::new(WafState { lock_token, group }) })
    }

    async fn replace(&self, snapshot: &Snapshot, owned: &[BlockRule]) -> Result<(), ReplaceError> {
        let state = snapshot.state.downcast_ref::<WafState>().expect("snapshot from this backend");
        let group = &state.group;
        let mut rules: Vec<Rule> = group.rules().iter().filter(|r| !r.name().starts_with(RULE_NAME_PREFIX)).cloned().collect();
        rules.extend(owned.iter().map(sdk_rule));
        rules.sort_by_key(Rule::priority);
        let visibility = group
            .visibility_config()
            .cloned()
            .ok_or_else(|| ReplaceError::Failed(self.err("GetRuleGroup", "rule group has no VisibilityConfig".into())))?;
        let result = self
            .client
            .update_rule_group()
            .name(&self.name)
            .scope(self.scope.clone())
            .id(&self.id)
            .lock_token(&state.lock_token)
            .visibility_config(visibility)
            .set_description(group.description().map(str::to_string))
            .set_custom_response_bodies(group.custom_response_bodies().cloned())
            .set_rules(Some(rules))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let stale = matches!(e.as_service_error(), Some(UpdateRuleGroupError::WafOptimisticLockException(_)))
                    || e.as_service_error().and_then(|s| s.code()) == Some("WAFOptimisticLockException");
                if stale {
                    Err(ReplaceError::StaleLock)
                } else {
                    let mut message = describe(&e);
                    if matches!(e.as_service_error(), Some(UpdateRuleGroupError::WafLimitsExceededException(_))) {
                        message.push_str(
                            " (the rules exceed the group's capacity: set enforcer.wafv2.reserved_capacity to the WCU of the rules revokd does not own)",
                        );
                    }
                    Err(ReplaceError::Failed(self.err("UpdateRuleGroup", message)))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_rule_round_trips_and_an_edited_one_is_drift() {
        let rule = BlockRule { name: "revokd-s1".into(), priority: 3, session_id: "s1".into() };
        assert_eq!(observe(&sdk_rule(&rule)), ObservedRule::Owned(rule.clone()));
        let counted = Rule::builder()
            .name("revokd-s1")
            .priority(3)
            .set_statement(sdk_rule(&rule).statement().cloned())
            .action(RuleAction::builder().count(aws_sdk_wafv2::types::CountAction::builder().build()).build())
            .set_visibility_config(sdk_rule(&rule).visibility_config().cloned())
            .build()
            .unwrap();
        assert!(matches!(observe(&counted), ObservedRule::Drifted { .. }));
    }
}
