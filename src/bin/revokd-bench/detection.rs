//! `revokd-bench detection`: detection quality of revokd's default detection and of the
//! reference scoring, replayed as the daemon runs.

use revokd::sim::{self, Scenario};

pub struct DetectionArgs {
    pub seeds: Vec<u64>,
    pub duration_s: i64,
    pub sessions: usize,
    pub leaks: usize,
    pub restreamers: usize,
    pub interval_s: i64,
    pub lookback_s: i64,
    pub delivery: Option<revokd::sim::replay::Delivery>,
    pub queries: Vec<String>,
    pub params: Vec<String>,
    pub verbose: bool,
    pub trace: Vec<String>,
}

pub async fn detection(args: DetectionArgs) -> Result<(), String> {
    use revokd::analysis::{Analyzer, DetectionQuery};
    use revokd::sim::replay::{Evaluation, MinuteBatches, ReplayOptions, replay};

    let mut analyzers = Vec::new();
    for name in &args.queries {
        let query = DetectionQuery::resolve(name, std::path::Path::new(".")).map_err(|e| e.to_string())?;
        let mut overrides = std::collections::BTreeMap::new();
        for p in &args.params {
            let (k, v) = p.split_once('=').ok_or_else(|| format!("--param {p}: expected name=value"))?;
            if query.declared.contains_key(k) {
                let value = v
                    .parse::<i64>()
                    .map(toml::Value::Integer)
                    .or_else(|_| v.parse::<f64>().map(toml::Value::Float))
                    .unwrap_or_else(|_| toml::Value::String(v.to_string()));
                overrides.insert(k.to_string(), value);
            }
        }
        let params = query.bind_params(&overrides).map_err(|(k, m)| format!("--param {k}: {m}"))?;
        analyzers.push((name.clone(), Analyzer::new(query, params)));
    }
    let options = ReplayOptions { interval_s: args.interval_s, lookback_s: args.lookback_s, delivery: args.delivery };
    let mut evaluations: Vec<Evaluation> = vec![Evaluation::default(); analyzers.len()];
    let mut requests = 0;
    for &seed in &args.seeds {
        let scenario = Scenario {
            seed,
            start: 1_795_168_800, // 2026-11-20T10:00:00Z
            duration_s: args.duration_s,
            honest_sessions: args.sessions,
            leaks: args.leaks,
            restreamers: args.restreamers,
            market: "US",
        };
        let traffic = sim::generate(&scenario);
        requests += traffic.requests.len();
        let batches = MinuteBatches::new(&traffic);
        let runs = replay(&traffic, &batches, &analyzers, options, &args.trace).await.map_err(|e| e.to_string())?;
        for r in &runs {
            for (id, t, score) in &r.traces {
                let truth = traffic.truth_of(id).map(|s| format!("{:?}", s.truth)).unwrap_or_default();
                println!(
                    "trace {} {id} @{}: score {:?} flagged {} {truth}\n    {:?}\n    {:?}",
                    r.name,
                    t - scenario.start,
                    score.score,
                    score.flagged,
                    score.reasons,
                    score.signals
                );
            }
        }
        for (evaluation, runs) in evaluations.iter_mut().zip(&runs) {
            evaluation.add(&traffic, runs, args.interval_s);
        }
        eprintln!("seed {seed}: {} sessions, {} requests replayed", traffic.sessions.len(), traffic.requests.len());
    }
    print_detection(&args, &evaluations, requests);
    Ok(())
}

fn print_detection(args: &DetectionArgs, evaluations: &[revokd::sim::replay::Evaluation], requests: usize) {
    let names: Vec<&str> = args.queries.iter().map(String::as_str).collect();
    let row = |label: &str, cells: Vec<String>| {
        print!("{label:<34}");
        for c in cells {
            print!("{c:>22}");
        }
        println!();
    };
    println!(
        "detection benchmark: seeds {:?}, {} h each, {} honest sessions + {} leaks + {} restreamers per seed, {} requests;",
        args.seeds,
        args.duration_s as f64 / 3600.0,
        args.sessions,
        args.leaks,
        args.restreamers,
        requests
    );
    println!("a run every {} s over the last {} s, as the daemon does", args.interval_s, args.lookback_s);
    match args.delivery {
        None => println!("every request's log delivered at once"),
        Some(d) => println!(
            "logs delivered in {}-minute files, each {}-{} s after its period; runs reach back {} for files delivered since the last",
            revokd::sim::replay::Delivery::FILE_PERIOD_S / 60,
            d.min_delay_s,
            d.max_delay_s,
            if d.max_delivery_delay_s > 0 { format!("up to {} s", d.max_delivery_delay_s) } else { "never".to_string() }
        ),
    }
    println!();
    row("", names.iter().map(|n| n.to_string()).collect());
    row("precision", evaluations.iter().map(|e| format!("{:.4}", e.precision())).collect());
    row("recall", evaluations.iter().map(|e| format!("{:.4}", e.recall())).collect());
    row("  leaks caught", evaluations.iter().map(|e| format!("{}/{}", e.leaks_caught, e.leaks)).collect());
    row("  restreamers caught", evaluations.iter().map(|e| format!("{}/{}", e.restreamers_caught, e.restreamers)).collect());
    row(
        "honest sessions blocked",
        evaluations
            .iter()
            .map(|e| {
                let (b, t): (usize, usize) = e.honest.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
                format!("{b}/{t} ({:.2}%)", 100.0 * b as f64 / t.max(1) as f64)
            })
            .collect(),
    );
    if let Some(first) = evaluations.first() {
        for behaviour in first.honest.keys() {
            row(
                &format!("  {}", behaviour.name()),
                evaluations
                    .iter()
                    .map(|e| {
                        let (b, t) = e.honest.get(behaviour).copied().unwrap_or_default();
                        format!("{b}/{t} ({:.2}%)", 100.0 * b as f64 / t.max(1) as f64)
                    })
                    .collect(),
            );
        }
    }
    row(
        "worst behaviour blocked",
        evaluations
            .iter()
            .map(|e| {
                let (b, share) = e.worst_honest_share();
                format!("{:.2}% {}", share * 100.0, b.name())
            })
            .collect(),
    );
    row("leaks reaching 3 viewers", evaluations.iter().map(|e| e.latencies.len().to_string()).collect());
    row("  revoked within one run", evaluations.iter().map(|e| format!("{:.1}%", e.within_one_run() * 100.0)).collect());
    let secs = |v: Option<i64>| v.map_or("never".to_string(), |s| format!("{s} s"));
    row("  time to revoke, median", evaluations.iter().map(|e| secs(e.latency_percentile(0.5))).collect());
    row("  time to revoke, p95", evaluations.iter().map(|e| secs(e.latency_percentile(0.95))).collect());
    row("  time to revoke, max", evaluations.iter().map(|e| secs(e.latency_percentile(1.0))).collect());
    row(
        "analysis per run, median",
        evaluations
            .iter()
            .map(|e| {
                let mut v = e.analyse_ms.clone();
                v.sort_by(f64::total_cmp);
                format!("{:.0} ms", v.get(v.len() / 2).copied().unwrap_or(0.0))
            })
            .collect(),
    );
    if args.verbose {
        for (name, e) in names.iter().zip(evaluations) {
            for (b, id) in &e.false_positive_examples {
                println!("{name}: honest {} blocked: {id}", b.name());
            }
            for (id, live, peak, late) in &e.slow_leaks {
                let kind = if *live { "live" } else { "vod" };
                println!(
                    "{name}: leak {id} ({kind}, peak {peak} viewers) revoked {}",
                    late.map_or("never".into(), |l| format!("{l} s after reaching 3 viewers"))
                );
            }
        }
    }
}
