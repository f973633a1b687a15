//! `queries/default.sql` on hand-built traffic: each honest pattern that fools the reference,
//! and each kind of sharing it must catch, with the reason it gives.

mod common;

use common::*;
use revokd::analysis::{Analyzer, DetectionQuery, SessionScore};
use revokd::source::Window;

async fn analyse(lines: &[String]) -> Vec<SessionScore> {
    let parsed = revokd::source::cloudfront::parse_log("test", log_text(lines).as_bytes()).unwrap();
    let window = Window {
        start: chrono::DateTime::from_timestamp(T0, 0).unwrap(),
        end: chrono::DateTime::from_timestamp(T0 + 600, 0).unwrap(),
    };
    let query = DetectionQuery::builtin("default");
    let params = query.bind_params(&Default::default()).unwrap();
    Analyzer::new(query, params).analyse(parsed.batches, &window).await.unwrap()
}

fn get<'a>(scores: &'a [SessionScore], id: &str) -> &'a SessionScore {
    scores.iter().find(|s| s.session_id == id).unwrap_or_else(|| panic!("{id} not analysed"))
}

#[tokio::test]
async fn default_query_plans_and_returns_the_documented_columns() {
    let query = DetectionQuery::builtin("default");
    let params = query.bind_params(&Default::default()).unwrap();
    Analyzer::new(query, params).validate().await.unwrap();
}

#[tokio::test]
async fn live_co_viewers_of_one_token_are_flagged_for_shared_segments() {
    let mut lines = honest_viewers();
    lines.extend(shared_session("leak3", 3));
    let scores = analyse(&lines).await;
    let leak = get(&scores, "leak3");
    assert!(leak.flagged, "{leak:?}");
    assert!(leak.reasons.iter().any(|r| r.starts_with("two playbacks at once")), "{:?}", leak.reasons);
    for id in ["honest1", "honest2", "honest3", "honest4"] {
        let s = get(&scores, id);
        assert!(!s.flagged, "{s:?}");
        assert_eq!(s.score, Some(0.0));
    }
}

#[tokio::test]
async fn one_viewer_moving_between_networks_is_not_flagged() {
    // Wi-Fi until 10:04:00, cellular (another edge) until 10:07:00, then Wi-Fi again.
    let wifi = Viewer { end: T0 + 240, ..viewer("handover", "198.51.100.20", "Mozilla/5.0 Mobile Safari") };
    let cell = Viewer { start: T0 + 243, end: T0 + 420, edge: "JFK6-C2", ..viewer("handover", "100.64.3.3", "Mozilla/5.0 Mobile Safari") };
    let back = Viewer { start: T0 + 423, ..viewer("handover", "198.51.100.20", "Mozilla/5.0 Mobile Safari") };
    let mut lines = honest_viewers();
    lines.extend(wifi.lines());
    lines.extend(cell.lines());
    lines.extend(back.lines());
    let s = get(&analyse(&lines).await, "handover").clone();
    assert!(!s.flagged, "{s:?}");
    assert_eq!(s.signals["ips"], 2.0);
}
