//! `queries/reference.sql` against an independent implementation of the same formula, written
//! here in plain Rust over the simulator's requests (not over what revokd parsed).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::T0;
use revokd::analysis::{Analyzer, DetectionQuery, SessionScore};
use revokd::sim::{self, Scenario};
use revokd::source::Window;

/// Every session of a log's text as the reference query, with its default parameters,
/// scores it over `[start, end)`.
async fn reference_scores(log: &[u8], start: i64, end: i64) -> Vec<SessionScore> {
    let parsed = revokd::source::cloudfront::parse_log("test", log).unwrap();
    let window =
        Window { start: chrono::DateTime::from_timestamp(start, 0).unwrap(), end: chrono::DateTime::from_timestamp(end, 0).unwrap() };
    let query = DetectionQuery::builtin("reference");
    let params = query.bind_params(&Default::default()).unwrap();
    Analyzer::new(query, params).analyse(parsed.batches, &window).await.unwrap()
}

#[derive(Default)]
struct Acc {
    pairs: BTreeSet<(u32, u32)>,
    ips: BTreeSet<u32>,
    referers: BTreeSet<Option<u32>>,
    uas: BTreeSet<Option<u32>>,
    first: i64,
    last: i64,
}

/// score per session, or None when not scored; computed as the AWS solution describes it,
/// with the median over sessions that lasted at least the minimum duration.
fn expected(traffic: &sim::Traffic, start: i64, end: i64) -> BTreeMap<String, Option<f64>> {
    let mut sessions: BTreeMap<u32, Acc> = BTreeMap::new();
    for r in &traffic.requests {
        let ts = r.ts.floor() as i64;
        if ts < start || ts >= end || !(r.status == 200 || r.status == 206) || r.bytes <= 1024 {
            continue;
        }
        let a = sessions.entry(r.session).or_insert_with(|| Acc { first: i64::MAX, last: i64::MIN, ..Default::default() });
        a.pairs.insert((r.ip, r.path));
        a.ips.insert(r.ip);
        a.referers.insert(r.referer);
        a.uas.insert(r.user_agent);
        a.first = a.first.min(ts);
        a.last = a.last.max(ts);
    }
    let rate = |a: &Acc| {
        let d = a.last - a.first;
        (d >= 30).then(|| a.pairs.len() as f64 / d as f64)
    };
    let mut rates: Vec<f64> = sessions.values().filter_map(rate).collect();
    rates.sort_by(f64::total_cmp);
    let median = match rates.len() {
        0 => None,
        n if n % 2 == 1 => Some(rates[n / 2]),
        n => Some((rates[n / 2 - 1] + rates[n / 2]) / 2.0),
    };
    let enough = sessions.len() >= 3;
    sessions
        .iter()
        .map(|(s, a)| {
            let score = match (rate(a), median) {
                (Some(r), Some(m)) if enough && m > 0.0 => {
                    Some(r / m + f64::from(a.ips.len() > 1) + f64::from(a.referers.len() > 1) + f64::from(a.uas.len() > 1))
                }
                _ => None,
            };
            (traffic.sessions[*s as usize].session_id.clone(), score)
        })
        .collect()
}

#[tokio::test]
async fn reference_query_matches_an_independent_implementation_on_simulated_traffic() {
    for seed in [3, 4] {
        let scenario = Scenario { seed, start: T0, duration_s: 1800, honest_sessions: 150, leaks: 6, restreamers: 2, market: "US" };
        let traffic = sim::generate(&scenario);
        let text = sim::logfile::render_all(&traffic, &Default::default());
        let (start, end) = (T0 + 1200, T0 + 1800);
        let scores = reference_scores(&text, start, end).await;

        let want = expected(&traffic, start, end);
        assert_eq!(scores.len(), want.len(), "seed {seed}: sessions analysed");
        let mut flagged = 0;
        for s in &scores {
            let w = want[&s.session_id];
            match (s.score, w) {
                (Some(got), Some(w)) => assert!((got - w).abs() < 1e-9, "seed {seed} {}: {got} vs {w}", s.session_id),
                (got, w) => assert_eq!(got, w, "seed {seed} {}", s.session_id),
            }
            assert_eq!(s.flagged, w.is_some_and(|w| w > 2.2), "seed {seed} {}", s.session_id);
            flagged += usize::from(s.flagged);
        }
        assert!(flagged > 0, "seed {seed}: something to compare");
    }
}

#[tokio::test]
async fn a_one_request_session_does_not_fail_the_run_and_is_not_scored() {
    let mut lines = common::honest_viewers();
    lines.push(common::line(T0 + 100, "IAD1", 5000, "192.0.2.9", "/lonely.h.p.s/live/ch1/720p/seg_1.ts", 200, "-", "curl/8"));
    let scores = reference_scores(common::log_text(&lines).as_bytes(), T0, T0 + 600).await;
    let lonely = scores.iter().find(|s| s.session_id == "lonely").unwrap();
    assert_eq!(lonely.score, None);
    assert!(!lonely.flagged);
    assert!(lonely.reasons[0].contains("lasted 0s"), "{:?}", lonely.reasons);
    // The others are still scored: the median ignores the zero-length session.
    assert!(scores.iter().filter(|s| s.session_id != "lonely").all(|s| s.score == Some(1.0)));
}

#[tokio::test]
async fn too_few_sessions_in_the_window_scores_nothing() {
    let lines = common::shared_session("leak", 5);
    let scores = reference_scores(common::log_text(&lines).as_bytes(), T0, T0 + 600).await;
    assert_eq!(scores.len(), 1);
    assert!(!scores[0].flagged);
    assert!(scores[0].reasons[0].contains("min_sessions"), "{:?}", scores[0].reasons);
}
