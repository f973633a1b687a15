//! The embedded revocation store: SQLite (bundled) in `state_dir`, for single-host setups
//! and for running without AWS. Transactions make each run's writes all-or-nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{DetectedKind, Detection, EntryKind, RecordOutcome, Revocation, RevocationStore, StoreError, epoch, from_epoch};
use crate::session::SessionId;

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: [&str; 1] = [include_str!("../../migrations/sqlite/0001_revocations.sql")];

/// Entries are kept this long past expiry (for `sessions list --all`), like DynamoDB's lazy TTL.
const KEEP_EXPIRED_SECS: i64 = 7 * 86_400;

pub struct EmbeddedStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    /// Whether opening applied migrations (a new or older database).
    migrated_on_open: bool,
}

/// How long a write waits for another process's transaction before it fails.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

const COLUMNS: &str = "session_id, type, reason, score, signals, first_seen, last_updated, expires_at, run_id";

impl EmbeddedStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |message: String| StoreError::Embedded { path: path.display().to_string(), message };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
        }
        let sqlite_err = |e: rusqlite::Error| sqlite_error(path, e);
        let conn = Connection::open(path).map_err(sqlite_err)?;
        // The busy timeout lets a CLI command wait for a run's transaction (or a run for a
        // command's) instead of failing: set first, since switching to WAL takes a lock too.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_err)?;
        // WAL lets `revokd sessions list` read while the daemon writes.
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sqlite_err)?;
        let mut store = EmbeddedStore { path: path.to_path_buf(), conn: Arc::new(Mutex::new(conn)), migrated_on_open: false };
        store.migrated_on_open = store.apply_migrations()?;
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Embedded { path: self.path.display().to_string(), message: e.to_string() }
    }

    fn apply_migrations(&self) -> Result<bool, StoreError> {
        let mut conn = self.conn.lock().expect("store lock");
        let version = |conn: &Connection| -> Result<usize, StoreError> {
            let applied: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| sqlite_error(&self.path, e))?;
            let applied = usize::try_from(applied).unwrap_or(usize::MAX);
            if applied > MIGRATIONS.len() {
                return Err(self.err(format!("schema version {applied} is newer than this revokd knows ({})", MIGRATIONS.len())));
            }
            Ok(applied)
        };
        // Most opens find the schema current: read only, so that commands opening the store
        // at once do not queue for its write lock.
        if version(&conn)? == MIGRATIONS.len() {
            return Ok(false);
        }
        let tx = write_transaction(&mut conn).map_err(|e| sqlite_error(&self.path, e))?;
        // Again under the write lock: another process may have migrated meanwhile.
        let applied = version(&tx)?;
        if applied == MIGRATIONS.len() {
            return Ok(false);
        }
        for sql in &MIGRATIONS[applied..] {
            tx.execute_batch(sql).map_err(|e| sqlite_error(&self.path, e))?;
        }
        tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64).map_err(|e| sqlite_error(&self.path, e))?;
        tx.commit().map_err(|e| sqlite_error(&self.path, e))?;
        Ok(applied < MIGRATIONS.len())
    }

    /// Runs blocking SQLite work off the async runtime.
    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().expect("store lock");
            f(&mut conn)
        })
        .await
        .map_err(|e| self.err(e))?
        .map_err(|e| sqlite_error(&self.path, e))
    }

    fn query(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> rusqlite::Result<Vec<Revocation>> {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(args, |r| {
            let id: String = r.get(0)?;
            let kind: String = r.get(1)?;
            let signals: String = r.get(4)?;
            let bad = |what: String| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, what.into());
            Ok(Revocation {
                session_id: id.clone(),
                kind: EntryKind::parse(&kind).ok_or_else(|| bad(format!("unknown type {kind}")))?,
                reason: r.get(2)?,
                score: r.get(3)?,
                signals: serde_json::from_str(&signals).map_err(|e| bad(format!("signals of {id}: {e}")))?,
                first_seen: from_epoch(r.get(5)?),
                last_updated: from_epoch(r.get(6)?),
                expires_at: from_epoch(r.get(7)?),
                run_id: r.get(8)?,
            })
        })?;
        rows.collect()
    }
}

/// A SQLite error as a store error. When SQLite could not write, and the database or its
/// folder belongs to another user, it says so: even a reader writes (WAL's shared-memory
/// file), and an operator listing the service's store as themselves met only "attempt to
/// write a readonly database".
fn sqlite_error(path: &Path, e: rusqlite::Error) -> StoreError {
    use crate::ownership;
    use rusqlite::ErrorCode::{CannotOpen, PermissionDenied, ReadOnly};
    let mut message = e.to_string();
    if matches!(e.sqlite_error_code(), Some(ReadOnly | CannotOpen | PermissionDenied)) {
        let owner = ownership::owner(path).or_else(|| ownership::owner(path.parent().unwrap_or(Path::new("."))));
        match owner {
            Some(owner) if owner != ownership::effective_uid() => message.push_str(&format!(
                " (the store belongs to uid {owner}, and SQLite writes beside it even to read: {})",
                ownership::run_as(owner)
            )),
            _ => message.push_str(" (SQLite writes beside the database even to read: it and its folder must be writable)"),
        }
    }
    StoreError::Embedded { path: path.display().to_string(), message }
}

/// Begins a transaction that writes. Immediate: it takes the write lock (waiting up to the
/// busy timeout) before its first statement. A deferred one that read before it wrote would
/// have to upgrade its read snapshot, and SQLite fails that at once, without waiting, when
/// another process has written since the snapshot was taken; immediate keeps every write
/// safe from that, whatever order its statements come in.
fn write_transaction(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

#[async_trait]
impl RevocationStore for EmbeddedStore {
    fn describe(&self) -> String {
        format!("embedded:{}", self.path.display())
    }

    async fn migrate(&self) -> Result<bool, StoreError> {
        // Opening applies pending migrations, so a store that exists is already migrated.
        Ok(self.migrated_on_open)
    }

    async fn record(
        &self,
        kind: DetectedKind,
        detections: &[Detection],
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        run_id: &str,
    ) -> Result<RecordOutcome, StoreError> {
        // Which existing entries a write may replace: AUTO renews AUTO and promotes HELD; HELD
        // only refreshes HELD; anything expired is fair game. MANUAL and UNREVOKED in force win.
        let replaceable = match kind {
            DetectedKind::Auto => "revocations.type IN ('AUTO', 'HELD')",
            DetectedKind::Held => "revocations.type = 'HELD'",
        };
        let sql = format!(
            "INSERT INTO revocations ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8)
             ON CONFLICT (session_id) DO UPDATE SET
                type = excluded.type, reason = excluded.reason, score = excluded.score,
                signals = excluded.signals, last_updated = excluded.last_updated,
                expires_at = excluded.expires_at, run_id = excluded.run_id
             WHERE {replaceable} OR revocations.expires_at <= excluded.last_updated"
        );
        let rows: Vec<(SessionId, Option<f64>, String, String)> = detections
            .iter()
            .map(|d| {
                let signals = serde_json::to_string(&d.signals).expect("signals serialise");
                (d.session_id.clone(), d.score, d.reason.clone(), signals)
            })
            .collect();
        let (now_s, exp_s, run_id) = (epoch(now), epoch(expires_at), run_id.to_string());
        let kind = EntryKind::from(kind).as_str();
        self.with_conn(move |conn| {
            let tx = write_transaction(conn)?;
            let mut outcome = RecordOutcome::default();
            {
                let mut upsert = tx.prepare_cached(&sql)?;
                let mut existing = tx.prepare_cached("SELECT type FROM revocations WHERE session_id = ?1")?;
                for (id, score, reason, signals) in &rows {
                    let changed = upsert.execute(params![id.as_str(), kind, reason, score, signals, now_s, exp_s, run_id])?;
                    if changed > 0 {
                        outcome.written.push(id.clone());
                        continue;
                    }
                    let blocker: Option<String> = existing.query_row([id.as_str()], |r| r.get(0)).optional()?;
                    match blocker.as_deref().and_then(EntryKind::parse) {
                        Some(EntryKind::Manual) => outcome.protected_manual.push(id.clone()),
                        Some(EntryKind::Unrevoked) => outcome.in_cooldown.push(id.clone()),
                        // A HELD write meeting an active AUTO: already revoked, nothing to hold.
                        _ => {}
                    }
                }
            }
            tx.execute("DELETE FROM revocations WHERE expires_at < ?1", [now_s - KEEP_EXPIRED_SECS])?;
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }

    async fn put_manual(&self, entries: &[Revocation]) -> Result<(), StoreError> {
        let entries = entries.to_vec();
        self.with_conn(move |conn| {
            let tx = write_transaction(conn)?;
            {
                let mut put = tx.prepare_cached(&format!(
                    "INSERT OR REPLACE INTO revocations ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ))?;
                for e in &entries {
                    put.execute(params![
                        e.session_id.as_str(),
                        e.kind.as_str(),
                        e.reason,
                        e.score,
                        serde_json::to_string(&e.signals).expect("signals serialise"),
                        epoch(e.first_seen),
                        epoch(e.last_updated),
                        epoch(e.expires_at),
                        e.run_id,
                    ])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn list_all(&self) -> Result<Vec<Revocation>, StoreError> {
        self.with_conn(|c| Self::query(c, &format!("SELECT {COLUMNS} FROM revocations ORDER BY session_id"), [])).await
    }

    async fn active(&self, now: DateTime<Utc>) -> Result<Vec<Revocation>, StoreError> {
        let now = epoch(now);
        self.with_conn(move |c| {
            Self::query(
                c,
                &format!(
                    "SELECT {COLUMNS} FROM revocations
                     WHERE type IN ('MANUAL', 'AUTO') AND expires_at > ?1 ORDER BY session_id"
                ),
                [now],
            )
        })
        .await
    }

    async fn get(&self, session_id: &SessionId) -> Result<Option<Revocation>, StoreError> {
        let id = session_id.as_str().to_string();
        let found =
            self.with_conn(move |c| Self::query(c, &format!("SELECT {COLUMNS} FROM revocations WHERE session_id = ?1"), [id])).await?;
        Ok(found.into_iter().next())
    }
}
