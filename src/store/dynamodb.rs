//! The DynamoDB revocation store (`store.backend = "dynamodb"`), table layout in
//! `migrations/dynamodb/`.
//!
//! Automatic writes go as TransactWriteItems of at most 25 conditional updates: BatchWriteItem
//! cannot carry a condition, and the condition is what protects MANUAL entries and cool-downs
//! without a read-then-write race. A cancelled transaction says per item why; items that
//! failed their condition are reported as protected, the others retried with backoff.
//! Operator writes (`revoke`/`unrevoke`, unconditional by design) go as BatchWriteItem of at
//! most 25, with UnprocessedItems retried with backoff.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest, ReturnValuesOnConditionCheckFailure,
    ScalarAttributeType, TimeToLiveSpecification, TimeToLiveStatus, TransactWriteItem, Update, WriteRequest,
};
use chrono::{DateTime, Utc};

use super::{DetectedKind, Detection, EntryKind, RecordOutcome, Revocation, RevocationStore, StoreError, epoch, from_epoch};
use crate::aws::{describe_error as describe, error_code};
use crate::config::DynamoConfig;
use crate::retry::{Attempts, Backoff, LeftOver};
use crate::session::SessionId;

/// DynamoDB's limit for both BatchWriteItem and (by our choice) each transaction.
pub const MAX_BATCH: usize = 25;
const MAX_ATTEMPTS: u32 = 8;
const TABLE_SPEC: &str = include_str!("../../migrations/dynamodb/0001_revocations.json");

/// Errors that say "slow down and send it again", whatever the operation.
fn throttled(code: Option<&str>) -> bool {
    matches!(code, Some("ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded"))
}

/// Between attempts at the items DynamoDB left over: 50 ms, doubling up to 5 s.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(5))
}

pub struct DynamoStore {
    client: Client,
    table: String,
}

/// A cancelled transaction's items, by the reason DynamoDB gives for each: one that failed its
/// condition is protected (its old entry says by what, recorded in `outcome`); the others were
/// fine and failed with the transaction, so they go again (returned).
fn settle_cancelled<'d>(
    pending: &[&'d Detection],
    reasons: &[aws_sdk_dynamodb::types::CancellationReason],
    outcome: &mut RecordOutcome,
) -> Vec<&'d Detection> {
    let mut retry = Vec::new();
    for (d, reason) in pending.iter().zip(reasons) {
        if reason.code() != Some("ConditionalCheckFailed") {
            retry.push(*d);
            continue;
        }
        let old_kind = reason.item().and_then(|i| i.get("type")).and_then(|v| v.as_s().ok()).and_then(|k| EntryKind::parse(k));
        match old_kind {
            Some(EntryKind::Manual) => outcome.protected_manual.push(d.session_id.clone()),
            Some(EntryKind::Unrevoked) => outcome.in_cooldown.push(d.session_id.clone()),
            _ => {}
        }
    }
    retry
}

/// The subset of CreateTable's input that `migrations/dynamodb/*.json` uses.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TableSpec {
    #[serde(rename = "_comment")]
    _comment: Option<String>,
    key_schema: Vec<KeySpec>,
    attribute_definitions: Vec<AttrSpec>,
    billing_mode: String,
    time_to_live_attribute: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeySpec {
    attribute_name: String,
    key_type: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AttrSpec {
    attribute_name: String,
    attribute_type: String,
}

fn key_schema(keys: &[KeySpec]) -> Vec<KeySchemaElement> {
    keys.iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(&k.attribute_name)
                .key_type(KeyType::from(k.key_type.as_str()))
                .build()
                .expect("name and type set")
        })
        .collect()
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn signals_value(signals: &BTreeMap<String, f64>) -> AttributeValue {
    AttributeValue::M(signals.iter().filter(|(_, v)| v.is_finite()).map(|(k, v)| (k.clone(), n(v))).collect())
}

impl DynamoStore {
    /// Every item `scan` returns, read consistently from the table, sorted by session id.
    async fn scan(&self, scan: ScanFluentBuilder) -> Result<Vec<Revocation>, StoreError> {
        let mut pages = scan.table_name(&self.table).consistent_read(true).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.call_err("Scan", &e))?;
            for item in page.items() {
                out.push(self.parse_item(item)?);
            }
        }
        out.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        Ok(out)
    }

    pub async fn connect(config: &DynamoConfig) -> Result<DynamoStore, StoreError> {
        let sdk = crate::aws::sdk_config(config.region.as_deref(), config.endpoint.as_deref()).await;
        // Without one, every call fails on signing, in a dump of the SDK's internals.
        if sdk.region().is_none() {
            return Err(StoreError::Dynamo {
                table: config.table.clone(),
                operation: "connect",
                message: "no AWS region: set store.dynamodb.region, AWS_REGION, or a region in the AWS profile".into(),
            });
        }
        Ok(DynamoStore { client: Client::new(&sdk), table: config.table.clone() })
    }

    fn left_over(&self, operation: &'static str, e: LeftOver) -> StoreError {
        StoreError::Unprocessed { table: self.table.clone(), operation, left: e.left, attempts: e.attempts }
    }

    fn err(&self, operation: &'static str, message: String) -> StoreError {
        StoreError::Dynamo { table: self.table.clone(), operation, message }
    }

    /// A failed call, as the service answered it; a missing table, what a new install meets
    /// first, says what fixes it.
    fn call_err<E, R>(&self, operation: &'static str, e: &SdkError<E, R>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let mut message = describe(e);
        if error_code(e) == Some("ResourceNotFoundException") {
            message.push_str(
                " (no such table in this region and account: check `store.dynamodb.table` and `.region`; `revokd migrate` creates it)",
            );
        }
        self.err(operation, message)
    }

    fn item_of(&self, r: &Revocation) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::from([
            ("session_id".to_string(), s(r.session_id.as_str())),
            ("type".to_string(), s(r.kind.as_str())),
            ("reason".to_string(), s(&r.reason)),
            ("signals".to_string(), signals_value(&r.signals)),
            ("first_seen".to_string(), n(epoch(r.first_seen))),
            ("last_updated".to_string(), n(epoch(r.last_updated))),
            ("expires_at".to_string(), n(epoch(r.expires_at))),
        ]);
        if let Some(score) = r.score.filter(|s| s.is_finite()) {
            item.insert("score".into(), n(score));
        }
        if let Some(run) = &r.run_id {
            item.insert("run_id".into(), s(run));
        }
        if r.kind.revokes() {
            item.insert("active".into(), s("1"));
        }
        item
    }

    fn parse_item(&self, item: &HashMap<String, AttributeValue>) -> Result<Revocation, StoreError> {
        let key = item.get("session_id").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        let bad = |message: String| StoreError::BadItem { table: self.table.clone(), key: key.clone(), message };
        let text = |name: &str| -> Result<String, StoreError> {
            item.get(name).and_then(|v| v.as_s().ok()).cloned().ok_or_else(|| bad(format!("attribute `{name}` missing or not a string")))
        };
        let number = |name: &str| -> Result<Option<f64>, StoreError> {
            match item.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_n()
                    .ok()
                    .and_then(|n| n.parse::<f64>().ok())
                    .map(Some)
                    .ok_or_else(|| bad(format!("attribute `{name}` is not a number"))),
            }
        };
        let time = |name: &str| -> Result<DateTime<Utc>, StoreError> {
            number(name)?.map(|v| from_epoch(v as i64)).ok_or_else(|| bad(format!("attribute `{name}` missing")))
        };
        let kind = text("type")?;
        let mut signals = BTreeMap::new();
        if let Some(AttributeValue::M(m)) = item.get("signals") {
            for (k, v) in m {
                if let Some(x) = v.as_n().ok().and_then(|n| n.parse().ok()) {
                    signals.insert(k.clone(), x);
                }
            }
        }
        let last_updated = time("last_updated")?;
        Ok(Revocation {
            session_id: key.clone(),
            kind: EntryKind::parse(&kind).ok_or_else(|| bad(format!("unknown type `{kind}`")))?,
            reason: text("reason").unwrap_or_default(),
            score: number("score")?,
            signals,
            first_seen: time("first_seen").unwrap_or(last_updated),
            last_updated,
            expires_at: time("expires_at")?,
            run_id: item.get("run_id").and_then(|v| v.as_s().ok()).cloned(),
        })
    }

    fn conditional_update(
        &self,
        kind: EntryKind,
        d: &Detection,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        run_id: &str,
    ) -> TransactWriteItem {
        let mut set = vec![
            "#type = :kind",
            "#reason = :reason",
            "#signals = :signals",
            "#last_updated = :now",
            "#expires_at = :expires_at",
            "#run_id = :run_id",
            "#first_seen = if_not_exists(#first_seen, :now)",
        ];
        let mut values = HashMap::from([
            (":kind".to_string(), s(kind.as_str())),
            (":reason".to_string(), s(&d.reason)),
            (":signals".to_string(), signals_value(&d.signals)),
            (":now".to_string(), n(epoch(now))),
            (":expires_at".to_string(), n(epoch(expires_at))),
            (":run_id".to_string(), s(run_id)),
            (":auto".to_string(), s(EntryKind::Auto.as_str())),
            (":held".to_string(), s(EntryKind::Held.as_str())),
        ]);
        let mut names = HashMap::from(
            ["type", "reason", "signals", "last_updated", "expires_at", "run_id", "first_seen", "active", "score"]
                .map(|a| (format!("#{a}"), a.to_string())),
        );
        names.insert("#session_id".into(), "session_id".into());
        let mut remove = Vec::new();
        match d.score.filter(|s| s.is_finite()) {
            Some(score) => {
                set.push("#score = :score");
                values.insert(":score".into(), n(score));
            }
            None => remove.push("#score"),
        }
        if kind.revokes() {
            set.push("#active = :active");
            values.insert(":active".into(), s("1"));
        } else {
            remove.push("#active");
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        // The same rule as the embedded store: replace nothing in force but our own kinds.
        let condition = match kind {
            EntryKind::Auto => "attribute_not_exists(#session_id) OR #type = :auto OR #type = :held OR #expires_at <= :now",
            _ => {
                values.remove(":auto");
                "attribute_not_exists(#session_id) OR #type = :held OR #expires_at <= :now"
            }
        };
        let update = Update::builder()
            .table_name(&self.table)
            .key("session_id", s(d.session_id.as_str()))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("table, key and expression set");
        TransactWriteItem::builder().update(update).build()
    }

    /// BatchWriteItem in chunks of 25, retrying UnprocessedItems with backoff.
    async fn batch_put(&self, items: Vec<HashMap<String, AttributeValue>>) -> Result<(), StoreError> {
        for chunk in items.chunks(MAX_BATCH) {
            let mut left: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| {
                    WriteRequest::builder()
                        .put_request(PutRequest::builder().set_item(Some(item.clone())).build().expect("item set"))
                        .build()
                })
                .collect();
            let mut attempts = Attempts::new("BatchWriteItem", MAX_ATTEMPTS, backoff());
            loop {
                left = match self.client.batch_write_item().request_items(&self.table, left.clone()).send().await {
                    Ok(out) => out.unprocessed_items.unwrap_or_default().remove(&self.table).unwrap_or_default(),
                    Err(e) if throttled(error_code(&e)) => left,
                    Err(e) => return Err(self.call_err("BatchWriteItem", &e)),
                };
                if !attempts.again(left.len()).await.map_err(|e| self.left_over("BatchWriteItem", e))? {
                    break;
                }
            }
        }
        Ok(())
    }

    async fn ensure_ttl(&self, attribute: &str) -> Result<(), StoreError> {
        let ttl = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| self.call_err("DescribeTimeToLive", &e))?;
        let enabled = ttl.time_to_live_description().is_some_and(|d| {
            matches!(d.time_to_live_status(), Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling))
                && d.attribute_name() == Some(attribute)
        });
        if !enabled {
            self.client
                .update_time_to_live()
                .table_name(&self.table)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder().attribute_name(attribute).enabled(true).build().expect("set"),
                )
                .send()
                .await
                .map_err(|e| self.call_err("UpdateTimeToLive", &e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl RevocationStore for DynamoStore {
    fn describe(&self) -> String {
        format!("dynamodb:{}", self.table)
    }

    async fn migrate(&self) -> Result<bool, StoreError> {
        let spec: TableSpec = serde_json::from_str(TABLE_SPEC).expect("migrations/dynamodb spec parses");
        let exists = match self.client.describe_table().table_name(&self.table).send().await {
            Ok(_) => true,
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => false,
            Err(e) => return Err(self.call_err("DescribeTable", &e)),
        };
        if !exists {
            let attributes = spec
                .attribute_definitions
                .iter()
                .map(|a| {
                    AttributeDefinition::builder()
                        .attribute_name(&a.attribute_name)
                        .attribute_type(ScalarAttributeType::from(a.attribute_type.as_str()))
                        .build()
                        .expect("set")
                })
                .collect();
            let created = self
                .client
                .create_table()
                .table_name(&self.table)
                .set_key_schema(Some(key_schema(&spec.key_schema)))
                .set_attribute_definitions(Some(attributes))
                .billing_mode(BillingMode::from(spec.billing_mode.as_str()))
                .send()
                .await;
            match created {
                Ok(_) => {}
                // Another migrate won the race: the table exists, which is what we want.
                Err(e) if error_code(&e) == Some("ResourceInUseException") => {}
                Err(e) => return Err(self.call_err("CreateTable", &e)),
            }
            self.wait_active().await?;
        }
        self.ensure_ttl(&spec.time_to_live_attribute).await?;
        Ok(!exists)
    }

    async fn record(
        &self,
        kind: DetectedKind,
        detections: &[Detection],
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        run_id: &str,
    ) -> Result<RecordOutcome, StoreError> {
        let kind = EntryKind::from(kind);
        let mut outcome = RecordOutcome::default();
        for chunk in detections.chunks(MAX_BATCH) {
            let mut attempts = Attempts::new("TransactWriteItems", MAX_ATTEMPTS, backoff());
            let mut pending: Vec<&Detection> = chunk.iter().collect();
            loop {
                let items = pending.iter().map(|d| self.conditional_update(kind, d, now, expires_at, run_id)).collect();
                let err = match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
                    Ok(_) => {
                        outcome.written.extend(pending.iter().map(|d| d.session_id.clone()));
                        break;
                    }
                    Err(e) => e,
                };
                let reasons = err
                    .as_service_error()
                    .and_then(|e| match e {
                        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => {
                            Some(c.cancellation_reasons())
                        }
                        _ => None,
                    })
                    .unwrap_or_default();
                pending = if reasons.len() == pending.len() {
                    settle_cancelled(&pending, reasons, &mut outcome)
                } else if throttled(error_code(&err))
                    || matches!(error_code(&err), Some("TransactionConflictException" | "InternalServerError"))
                {
                    tracing::debug!(table = %self.table, items = pending.len(), error = %describe(&err), "revocation writes failed as a whole; retrying");
                    pending
                } else {
                    return Err(self.call_err("TransactWriteItems", &err));
                };
                if !attempts.again(pending.len()).await.map_err(|e| self.left_over("TransactWriteItems", e))? {
                    break;
                }
            }
        }
        Ok(outcome)
    }

    async fn put_manual(&self, entries: &[Revocation]) -> Result<(), StoreError> {
        self.batch_put(entries.iter().map(|e| self.item_of(e)).collect()).await
    }

    async fn list_all(&self) -> Result<Vec<Revocation>, StoreError> {
        self.scan(self.client.scan()).await
    }

    async fn active(&self, now: DateTime<Utc>) -> Result<Vec<Revocation>, StoreError> {
        // A consistent Scan of the table, not a Query of an index: a global secondary index
        // is read eventually consistently, so an entry recorded a moment ago (by `revoke`
        // just before it reconciles, or by another writer before it updated the rule group)
        // could be missing, and the rule group would be planned without it. The filter drops
        // entries past expiry that TTL has not deleted yet.
        let filtered = self
            .client
            .scan()
            .filter_expression("#active = :one AND #expires_at > :now")
            .expression_attribute_names("#active", "active")
            .expression_attribute_names("#expires_at", "expires_at")
            .expression_attribute_values(":one", s("1"))
            .expression_attribute_values(":now", n(epoch(now)));
        let mut active = self.scan(filtered).await?;
        // An item another tool wrote with `active` but not a revoking type.
        active.retain(|r| r.is_active(now));
        Ok(active)
    }

    async fn get(&self, session_id: &SessionId) -> Result<Option<Revocation>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("session_id", s(session_id.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.call_err("GetItem", &e))?;
        out.item().map(|i| self.parse_item(i)).transpose()
    }
}

impl DynamoStore {
    async fn wait_active(&self) -> Result<(), StoreError> {
        for _ in 0..120 {
            let d = self.client.describe_table().table_name(&self.table).send().await.map_err(|e| self.call_err("DescribeTable", &e))?;
            let status = d.table().and_then(|t| t.table_status()).map(|s| s.as_str().to_string());
            if status.as_deref() == Some("ACTIVE") {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(self.err("CreateTable", "table did not become ACTIVE within 60 s".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
    use aws_sdk_dynamodb::config::{ConfigBag, Credentials, Intercept, RuntimeComponents};

    /// Keeps every request's operation and body, and sends none.
    #[derive(Debug, Clone, Default)]
    struct Requests(std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>);

    impl Intercept for Requests {
        fn name(&self) -> &'static str {
            "requests"
        }

        fn read_before_transmit(
            &self,
            context: &BeforeTransmitInterceptorContextRef<'_>,
            _: &RuntimeComponents,
            _: &mut ConfigBag,
        ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
            let request = context.request();
            let operation = request.headers().get("x-amz-target").unwrap_or_default().to_string();
            let body = serde_json::from_slice(request.body().bytes().unwrap_or_default()).unwrap_or_default();
            self.0.lock().unwrap().push((operation, body));
            Err("kept, not sent".into())
        }
    }

    /// What the enforcer plans from must hold a revocation recorded a moment before, so it is
    /// read consistently from the table. A global secondary index (what this read used to
    /// query) cannot be read consistently, but moto's indexes are, so the stale read cannot
    /// be shown on the emulator; this checks the request itself.
    #[tokio::test]
    async fn revocations_in_force_are_read_consistently_from_the_table_not_from_an_index() {
        let requests = Requests::default();
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .endpoint_url("http://127.0.0.1:9")
            .interceptor(requests.clone())
            .build();
        let store = DynamoStore { client: Client::from_conf(config), table: "revocations".into() };
        assert!(store.active(DateTime::from_timestamp(1_800_000_000, 0).unwrap()).await.is_err(), "nothing was sent");
        let sent = requests.0.lock().unwrap().clone();
        assert!(!sent.is_empty());
        for (operation, body) in sent {
            assert_eq!(operation, "DynamoDB_20120810.Scan");
            assert_eq!(body["ConsistentRead"], true, "{body}");
            assert_eq!(body.get("IndexName"), None, "{body}");
            assert_eq!(body["ExpressionAttributeValues"][":now"], serde_json::json!({ "N": "1800000000" }));
        }
    }

    #[test]
    fn table_spec_in_migrations_parses_and_names_the_ttl_attribute() {
        let spec: TableSpec = serde_json::from_str(TABLE_SPEC).unwrap();
        assert_eq!(spec.time_to_live_attribute, "expires_at");
        assert_eq!(spec.key_schema[0].attribute_name, "session_id");
    }
}
