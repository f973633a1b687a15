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
    let options = ReplayOptions { interval_s: 300, lookback_s: 600, delivery: None };
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

#[tokio::test]
async fn with_logs_later_than_the_lookback_runs_that_reach_back_catch_every_abuser_and_runs_that_do_not_catch_none() {
    use revokd::sim::replay::Delivery;
    let scenario = Scenario { seed: 77, start: common::T0, duration_s: 1800, honest_sessions: 150, leaks: 4, restreamers: 2, market: "US" };
    let traffic = sim::generate(&scenario);
    let batches = MinuteBatches::new(&traffic);
    // Every 10-minute file 15-30 minutes late, longer than the 10-minute lookback.
    let late = |max_delivery_delay_s| ReplayOptions {
        interval_s: 300,
        lookback_s: 600,
        delivery: Some(Delivery { min_delay_s: 900, max_delay_s: 1800, max_delivery_delay_s }),
    };
    let queries = vec![analyzer("default")];
    let evaluate = |runs: &[revokd::sim::replay::QueryRuns]| {
        let mut e = Evaluation::default();
        e.add(&traffic, &runs[0], 300);
        e
    };

    let reaching = evaluate(&replay(&traffic, &batches, &queries, late(3600), &[]).await.unwrap());
    assert_eq!(reaching.recall(), 1.0, "{:?}", reaching.slow_leaks);
    assert_eq!(reaching.false_positives, 0, "{:?}", reaching.false_positive_examples);
    // Runs go on until the last file is in: the last period's file, at most 30 minutes late.
    let not_reaching = replay(&traffic, &batches, &queries, late(0), &[]).await.unwrap();
    assert!(not_reaching[0].run_times.last() >= Some(&(common::T0 + 1800 + 1800)));
    let not_reaching = evaluate(&not_reaching);
    // A minute's requests come in at least 15 minutes after it, when no 10-minute window holds it.
    assert_eq!(not_reaching.recall(), 0.0);
}
