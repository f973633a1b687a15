//! The detection benchmark's machinery on a small simulated population: runs replayed as the
//! daemon does, decisions scored against the ground truth.

mod common;

use revokd::analysis::{Analyzer, DetectionQuery};
use revokd::sim::replay::{Evaluation, MinuteBatches, ReplayOptions, replay};
use revokd::sim::{self, Scenario, Truth};

fn analyzer(name: &str) -> (String, Analyzer) {
    let query = DetectionQuery::builtin(name);
    let params = query.bind_params(&Default::default()).unwrap();
    (name.to_string(), Analyzer::new(query, params))
}

#[tokio::test]
async fn replay_scores_both_queries_against_the_truth_and_default_separates_abuse_from_honest() {
    let scenario = Scenario { seed: 77, start: common::T0, duration_s: 1800, honest_sessions: 150, leaks: 4, restreamers: 2, market: "US" };
    let traffic = sim::generate(&scenario);
    let batches = MinuteBatches::new(&traffic);
    let options = ReplayOptions { interval_s: 300, lookback_s: 600 };
    let queries = vec![analyzer("default"), analyzer("reference")];
    let runs = replay(&traffic, &batches, &queries, options, &[]).await.unwrap();
    assert_eq!(runs[0].run_times, (1..=6).map(|k| common::T0 + 300 * k).collect::<Vec<_>>());

    let mut default = Evaluation::default();
    default.add(&traffic, &runs[0], 300);
    let mut reference = Evaluation::default();
    reference.add(&traffic, &runs[1], 300);

    let honest_total: usize = default.honest.values().map(|(_, t)| t).sum();
    let honest_in_truth = traffic.sessions.iter().filter(|s| matches!(s.truth, Truth::Honest(_))).count();
    assert!(honest_total > 100 && honest_total <= honest_in_truth);
    assert_eq!(default.restreamers, 2);
    assert_eq!(default.true_positives + default.false_negatives, default.leaks + default.restreamers);

    assert_eq!(default.false_positives, 0, "{:?}", default.false_positive_examples);
    assert_eq!(default.recall(), 1.0, "{:?}", default.slow_leaks);
    assert!(reference.false_positives > 0, "the reference blocks honest sessions on the same traffic");
}
