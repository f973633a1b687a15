//! Revocation store: the list of revoked sessions, in DynamoDB or an embedded SQLite
//! database. Both backends keep the same rules:
//!
//! * automatic detection upserts AUTO entries, but never overwrites or shortens an active
//!   MANUAL entry, and never re-revokes a session still in its unrevoke cool-down — enforced
//!   by a condition on the write itself, not by reading first;
//! * an entry past `expires_at` is ignored everywhere, whether or not it was deleted yet;
//! * `unrevoke` leaves a tombstone (kind UNREVOKED) that expires when the cool-down ends.

pub mod dynamodb;
pub mod embedded;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::session::SessionId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EntryKind {
    /// Revoked by an operator.
    Manual,
    /// Revoked by detection.
    Auto,
    /// Unrevoked by an operator: not revoked, and protected from automatic revocation until
    /// it expires.
    Unrevoked,
    /// Flagged by a run that the blast-radius guard stopped: not revoked, kept for review.
    Held,
}

/// The kinds of entry a run writes for its detections; operators write the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectedKind {
    Auto,
    Held,
}

impl From<DetectedKind> for EntryKind {
    fn from(kind: DetectedKind) -> Self {
        match kind {
            DetectedKind::Auto => EntryKind::Auto,
            DetectedKind::Held => EntryKind::Held,
        }
    }
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Manual => "MANUAL",
            EntryKind::Auto => "AUTO",
            EntryKind::Unrevoked => "UNREVOKED",
            EntryKind::Held => "HELD",
        }
    }

    pub fn parse(s: &str) -> Option<EntryKind> {
        Some(match s {
            "MANUAL" => EntryKind::Manual,
            "AUTO" => EntryKind::Auto,
            "UNREVOKED" => EntryKind::Unrevoked,
            "HELD" => EntryKind::Held,
            _ => return None,
        })
    }

    /// Whether an unexpired entry of this kind blocks the session.
    pub fn revokes(self) -> bool {
        matches!(self, EntryKind::Manual | EntryKind::Auto)
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the revocation list.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Revocation {
    /// As stored: entries written by others are not guaranteed valid, so the enforcer checks.
    pub session_id: String,
    pub kind: EntryKind,
    pub reason: String,
    pub score: Option<f64>,
    pub signals: BTreeMap<String, f64>,
    pub first_seen: DateTime<Utc>,
    pub last_updated: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The run that last wrote an automatic entry.
    pub run_id: Option<String>,
}

impl Revocation {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.kind.revokes() && self.expires_at > now
    }
}

/// A flagged session to record as AUTO (or HELD).
#[derive(Debug, Clone)]
pub struct Detection {
    pub session_id: SessionId,
    pub score: Option<f64>,
    pub reason: String,
    pub signals: BTreeMap<String, f64>,
}

/// What recording a run's detections did.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct RecordOutcome {
    /// Sessions written (new, renewed or replacing an expired entry).
    pub written: Vec<SessionId>,
    /// Sessions left alone because of an active MANUAL entry.
    pub protected_manual: Vec<SessionId>,
    /// Sessions left alone because they are in their unrevoke cool-down.
    pub in_cooldown: Vec<SessionId>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("embedded store {path}: {message}")]
    Embedded { path: String, message: String },
    #[error("DynamoDB table {table}: {operation}: {message}")]
    Dynamo { table: String, operation: &'static str, message: String },
    #[error("DynamoDB table {table}: item {key}: {message}")]
    BadItem { table: String, key: String, message: String },
    #[error("DynamoDB table {table}: {operation} still had {left} unprocessed items after {attempts} attempts")]
    Unprocessed { table: String, operation: &'static str, left: usize, attempts: u32 },
}

#[async_trait]
pub trait RevocationStore: Send + Sync {
    /// A human-readable name (`embedded:/path`, `dynamodb:table`) for logs.
    fn describe(&self) -> String;

    /// Creates the schema/table if missing; a no-op when it exists. Returns whether it created.
    async fn migrate(&self) -> Result<bool, StoreError>;

    /// Records a run's detections as entries of `kind` expiring at `expires_at`. AUTO renews
    /// AUTO and promotes HELD, unless protected (an active MANUAL entry, or an UNREVOKED
    /// tombstone in its cool-down); HELD (detections a guard held back, for review) never
    /// replaces an active entry of another kind.
    async fn record(
        &self,
        kind: DetectedKind,
        detections: &[Detection],
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        run_id: &str,
    ) -> Result<RecordOutcome, StoreError>;

    /// Operator writes: MANUAL revocations or UNREVOKED tombstones, replacing whatever is
    /// there (the operator has the last word).
    async fn put_manual(&self, entries: &[Revocation]) -> Result<(), StoreError>;

    /// Every entry, expired or not, sorted by session id.
    async fn list_all(&self) -> Result<Vec<Revocation>, StoreError>;

    /// Entries that revoke at `now` (MANUAL or AUTO, not expired).
    async fn active(&self, now: DateTime<Utc>) -> Result<Vec<Revocation>, StoreError>;

    async fn get(&self, session_id: &SessionId) -> Result<Option<Revocation>, StoreError>;
}

/// Opens the configured backend.
pub async fn open(config: &crate::config::Config) -> Result<Box<dyn RevocationStore>, StoreError> {
    match &config.store {
        crate::config::StoreConfig::Embedded { path } => Ok(Box::new(embedded::EmbeddedStore::open(path)?)),
        crate::config::StoreConfig::Dynamodb(c) => Ok(Box::new(dynamodb::DynamoStore::connect(c).await?)),
    }
}

pub(crate) fn epoch(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

pub(crate) fn from_epoch(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(s, 0).unwrap_or(DateTime::UNIX_EPOCH)
}
