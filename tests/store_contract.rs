//! The rules every revocation store keeps, checked against both backends: the embedded SQLite
//! store and DynamoDB (on moto). Expiry is asserted through `active()`/conditions, which do not
//! wait for TTL deletion — moto never runs TTL, and DynamoDB deletes lazily.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::*;
use revokd::config::DynamoConfig;
use revokd::session::SessionId;
use revokd::store::dynamodb::DynamoStore;
use revokd::store::embedded::EmbeddedStore;
use revokd::store::{DetectedKind, Detection, EntryKind, Revocation, RevocationStore};

fn t(offset_s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(T0 + offset_s, 0).unwrap()
}

fn detection(id: &str, score: f64) -> Detection {
    Detection {
        session_id: SessionId::parse(id).unwrap(),
        score: Some(score),
        reason: format!("score {score}"),
        signals: [("ips".to_string(), 3.0)].into(),
    }
}

fn operator(id: &str, kind: EntryKind, at: DateTime<Utc>, lasts: Duration) -> Revocation {
    Revocation {
        session_id: id.into(),
        kind,
        reason: "operator".into(),
        score: None,
        signals: Default::default(),
        first_seen: at,
        last_updated: at,
        expires_at: at + lasts,
        run_id: None,
    }
}

fn ids(v: &[SessionId]) -> Vec<&str> {
    v.iter().map(SessionId::as_str).collect()
}

async fn contract(store: &dyn RevocationStore) {
    let hour = Duration::hours(1);
    // An active MANUAL entry, a MANUAL one already expired, an unrevoke in its cool-down and
    // one whose cool-down is over.
    store
        .put_manual(&[
            operator("manual-live", EntryKind::Manual, t(0), hour),
            operator("manual-old", EntryKind::Manual, t(-7200), hour),
            operator("cooling", EntryKind::Unrevoked, t(0), hour),
            operator("cooled", EntryKind::Unrevoked, t(-7200), hour),
        ])
        .await
        .unwrap();
    let now = t(60);
    let batch: Vec<Detection> = ["fresh", "manual-live", "manual-old", "cooling", "cooled"].iter().map(|id| detection(id, 4.0)).collect();
    let outcome = store.record(DetectedKind::Auto, &batch, now, now + hour, "run-1").await.unwrap();
    let mut written = ids(&outcome.written);
    written.sort();
    assert_eq!(written, vec!["cooled", "fresh", "manual-old"], "expired entries are replaced, live ones protected");
    assert_eq!(ids(&outcome.protected_manual), vec!["manual-live"]);
    assert_eq!(ids(&outcome.in_cooldown), vec!["cooling"]);

    let manual = store.get(&SessionId::parse("manual-live").unwrap()).await.unwrap().unwrap();
    assert_eq!((manual.kind, manual.expires_at, manual.reason.as_str()), (EntryKind::Manual, t(0) + hour, "operator"));
    let fresh = store.get(&SessionId::parse("fresh").unwrap()).await.unwrap().unwrap();
    assert_eq!((fresh.kind, fresh.score, fresh.run_id.as_deref()), (EntryKind::Auto, Some(4.0), Some("run-1")));
    assert_eq!(fresh.signals["ips"], 3.0);

    // Active now: the live manual entry and the three AUTO writes; the cool-down is not.
    let active: Vec<String> = store.active(now).await.unwrap().into_iter().map(|r| r.session_id).collect();
    assert_eq!(active, vec!["cooled", "fresh", "manual-live", "manual-old"]);
    // Past every expiry nothing is active, though nothing was deleted.
    assert!(store.active(t(3 * 3600)).await.unwrap().is_empty());
    assert_eq!(store.list_all().await.unwrap().len(), 5);

    // A later detection renews AUTO: new expiry, same first_seen.
    let later = t(600);
    store.record(DetectedKind::Auto, &[detection("fresh", 5.0)], later, later + hour, "run-2").await.unwrap();
    let renewed = store.get(&SessionId::parse("fresh").unwrap()).await.unwrap().unwrap();
    assert_eq!((renewed.expires_at, renewed.first_seen, renewed.score), (later + hour, now, Some(5.0)));

    // HELD never replaces an active revocation; AUTO later promotes a HELD entry.
    let held = store
        .record(DetectedKind::Held, &[detection("fresh", 9.0), detection("doubtful", 3.0)], later, later + hour, "run-3")
        .await
        .unwrap();
    assert_eq!(ids(&held.written), vec!["doubtful"]);
    assert_eq!(store.get(&SessionId::parse("fresh").unwrap()).await.unwrap().unwrap().kind, EntryKind::Auto);
    assert!(!store.active(later).await.unwrap().iter().any(|r| r.session_id == "doubtful"), "HELD does not revoke");
    store.record(DetectedKind::Auto, &[detection("doubtful", 3.0)], later, later + hour, "run-4").await.unwrap();
    assert_eq!(store.get(&SessionId::parse("doubtful").unwrap()).await.unwrap().unwrap().kind, EntryKind::Auto);
}

#[tokio::test]
async fn embedded_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("revocations.sqlite")).unwrap();
    contract(&store).await;
}

#[tokio::test]
async fn dynamodb_store_keeps_the_contract() {
    let emu = emulator();
    let config = DynamoConfig { table: unique("contract"), region: Some("us-east-1".into()), endpoint: Some(emu.endpoint.clone()) };
    let store = DynamoStore::connect(&config).await.unwrap();
    assert!(store.migrate().await.unwrap(), "a new table is created");
    assert!(!store.migrate().await.unwrap(), "migrate is a no-op when the table exists");
    contract(&store).await;
}

#[tokio::test]
async fn embedded_store_survives_reopening_and_reports_no_second_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocations.sqlite");
    {
        let store = EmbeddedStore::open(&path).unwrap();
        assert!(store.migrate().await.unwrap());
        store.put_manual(&[operator("kept", EntryKind::Manual, t(0), Duration::hours(1))]).await.unwrap();
    }
    let store = EmbeddedStore::open(&path).unwrap();
    assert!(!store.migrate().await.unwrap());
    assert_eq!(store.active(t(1)).await.unwrap().len(), 1);
}

/// Another process writing the embedded store (the daemon's run, an operator's command in
/// another terminal) holds SQLite's write lock for a moment. Opening the store, recording a
/// run's detections and an operator's write all wait for it, where each failed at once with
/// "database is locked" when the other writer committed while they waited.
#[tokio::test]
async fn embedded_store_waits_for_another_processs_write_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocations.sqlite");
    drop(EmbeddedStore::open(&path).unwrap());
    for (i, attempt) in ["operator write", "detections"].into_iter().enumerate() {
        let (locked, wait_for_lock) = std::sync::mpsc::channel();
        let other_path = path.clone();
        let other_id = format!("other-{i}");
        let other_writer = std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&other_path).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            conn.execute(
                "INSERT INTO revocations (session_id, type, reason, first_seen, last_updated, expires_at) VALUES (?1, 'MANUAL', 'other', 0, 0, ?2)",
                rusqlite::params![other_id, T0 + 3600],
            )
            .unwrap();
            locked.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            conn.execute_batch("COMMIT").unwrap();
        });
        wait_for_lock.recv().unwrap();
        let store = EmbeddedStore::open(&path).expect("opening waits for the other writer");
        if attempt == "detections" {
            store.record(DetectedKind::Auto, &[detection("detected", 5.0)], t(0), t(3600), "run-1").await.expect("recording waits");
        } else {
            store.put_manual(&[operator("mine", EntryKind::Manual, t(0), Duration::hours(1))]).await.expect("an operator write waits");
        }
        other_writer.join().unwrap();
    }
    let ids: Vec<String> = EmbeddedStore::open(&path).unwrap().list_all().await.unwrap().into_iter().map(|r| r.session_id).collect();
    assert_eq!(ids, ["detected", "mine", "other-0", "other-1"]);
}
