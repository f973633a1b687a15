//! Replays simulated traffic the way the daemon works — a run every `interval` over the
//! `lookback` window — through one or more detection queries, and scores their decisions
//! against the ground truth.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use arrow::array::RecordBatch;
use chrono::DateTime;

use super::{Behaviour, Traffic, Truth};
use crate::analysis::{AnalysisError, Analyzer};
use crate::source::Window;
use crate::source::cloudfront::parse_log;

#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    pub interval_s: i64,
    pub lookback_s: i64,
    /// How the logs reach the bucket; `None`: every request at once.
    pub delivery: Option<Delivery>,
}

/// CloudFront's log delivery, modelled: the requests of each `FILE_PERIOD_S` go in one file,
/// delivered a delay drawn uniformly from `[min_delay_s, max_delay_s]` after the period ends.
/// A run sees the files delivered by its time, and reaches back as a run of the present does
/// (`LogSource::load_reaching_back`): to the earliest request (to the minute) of the files
/// delivered since the previous run, no further than `max_delivery_delay_s` before that run
/// (0: never).
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    pub min_delay_s: i64,
    pub max_delay_s: i64,
    pub max_delivery_delay_s: i64,
}

impl Delivery {
    /// CloudFront delivers "up to several times an hour".
    pub const FILE_PERIOD_S: i64 = 600;
}

/// The traffic as parsed `requests` batches, one group per minute, so a run's window takes
/// only its own minutes (what the daemon reads, without the cost of reading it each run).
pub struct MinuteBatches {
    minutes: BTreeMap<i64, Vec<RecordBatch>>,
}

impl MinuteBatches {
    pub fn new(traffic: &Traffic) -> MinuteBatches {
        let mut rng = fastrand::Rng::with_seed(traffic.scenario.seed);
        let mut minutes = BTreeMap::new();
        let mut start = 0;
        while start < traffic.requests.len() {
            let minute = (traffic.requests[start].ts.floor() as i64).div_euclid(60);
            let end = start + traffic.requests[start..].partition_point(|r| (r.ts.floor() as i64).div_euclid(60) == minute);
            let mut text = super::logfile::header().into_bytes();
            for r in &traffic.requests[start..end] {
                let double = rng.f64() < 0.05;
                super::logfile::render_line(&mut text, r, traffic, &mut rng, double);
            }
            let parsed = parse_log("replay", &text[..]).expect("simulated lines parse");
            minutes.insert(minute, parsed.batches);
            start = end;
        }
        MinuteBatches { minutes }
    }

    /// The batches of the minutes in `window` that `visible` lets through.
    fn window(&self, window: &Window, visible: impl Fn(i64) -> bool) -> Vec<RecordBatch> {
        let (from, to) = (window.start.timestamp().div_euclid(60), (window.end.timestamp() - 1).div_euclid(60));
        self.minutes.range(from..=to).filter(|(minute, _)| visible(**minute)).flat_map(|(_, b)| b.iter().cloned()).collect()
    }

    /// When each minute's requests are delivered, their file's period end plus its delay.
    fn delivery_times(&self, delivery: &Delivery, seed: u64) -> BTreeMap<i64, i64> {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0xde11_7e2e);
        let mut delays = BTreeMap::new();
        let per_file = Delivery::FILE_PERIOD_S / 60;
        self.minutes
            .keys()
            .map(|&minute| {
                let file = minute.div_euclid(per_file);
                let delay = *delays.entry(file).or_insert_with(|| rng.i64(delivery.min_delay_s..=delivery.max_delay_s));
                (minute, (file + 1) * Delivery::FILE_PERIOD_S + delay)
            })
            .collect()
    }
}

/// When each session was first flagged by a query, and how long its runs took.
pub struct QueryRuns {
    pub name: String,
    pub first_flagged: HashMap<String, i64>,
    pub run_times: Vec<i64>,
    pub analyse_ms: Vec<f64>,
    /// For the sessions asked to be traced: (run time, score) at every run.
    pub traces: Vec<(String, i64, crate::analysis::SessionScore)>,
}

pub async fn replay(
    traffic: &Traffic,
    batches: &MinuteBatches,
    queries: &[(String, Analyzer)],
    options: ReplayOptions,
    trace: &[String],
) -> Result<Vec<QueryRuns>, AnalysisError> {
    let mut results: Vec<QueryRuns> = queries
        .iter()
        .map(|(name, _)| QueryRuns {
            name: name.clone(),
            first_flagged: HashMap::new(),
            run_times: Vec::new(),
            analyse_ms: Vec::new(),
            traces: Vec::new(),
        })
        .collect();
    // The daemon was already running when the traffic began: the first run comes one interval
    // in, over a window that starts before the traffic.
    let (start, end) = (traffic.scenario.start, traffic.scenario.end());
    let delivered_at = options.delivery.map(|d| batches.delivery_times(&d, traffic.scenario.seed));
    // With delivery delays, runs go on until the last file is in.
    let last_run = end + options.delivery.map_or(0, |d| d.max_delay_s + Delivery::FILE_PERIOD_S);
    let mut previous_run = None;
    let mut t = start + options.interval_s;
    while t <= last_run {
        let mut window_start = t - options.lookback_s;
        if let (Some(delivery), Some(delivered_at), Some(previous)) = (options.delivery, &delivered_at, previous_run)
            && delivery.max_delivery_delay_s > 0
        {
            let horizon = previous - delivery.max_delivery_delay_s;
            let earliest_late = delivered_at
                .iter()
                .filter(|&(&minute, &at)| previous < at && at <= t && minute * 60 + 60 > horizon)
                .map(|(&minute, _)| (minute * 60).max(horizon))
                .min();
            window_start = earliest_late.map_or(window_start, |e| e.min(window_start));
        }
        let window = Window {
            start: DateTime::from_timestamp(window_start, 0).expect("in range"),
            end: DateTime::from_timestamp(t, 0).expect("in range"),
        };
        let input = batches.window(&window, |minute| delivered_at.as_ref().is_none_or(|d| d.get(&minute).is_some_and(|&at| at <= t)));
        for ((_, analyzer), result) in queries.iter().zip(results.iter_mut()) {
            let clock = Instant::now();
            let scores = analyzer.analyse(input.clone(), &window).await?;
            result.analyse_ms.push(clock.elapsed().as_secs_f64() * 1000.0);
            result.run_times.push(t);
            for s in scores {
                if trace.contains(&s.session_id) {
                    result.traces.push((s.session_id.clone(), t, s.clone()));
                }
                if s.flagged {
                    result.first_flagged.entry(s.session_id).or_insert(t);
                }
            }
        }
        previous_run = Some(t);
        t += options.interval_s;
    }
    Ok(results)
}

/// Detection quality of one query on one or more replays.
#[derive(Debug, Default, Clone)]
pub struct Evaluation {
    pub true_positives: usize,
    pub false_negatives: usize,
    pub false_positives: usize,
    pub leaks: usize,
    pub leaks_caught: usize,
    pub restreamers: usize,
    pub restreamers_caught: usize,
    /// Honest sessions blocked, and all honest sessions, by behaviour.
    pub honest: BTreeMap<Behaviour, (usize, usize)>,
    /// Per leak that reached 3 concurrent viewers: seconds from then to revocation (None: never).
    pub latencies: Vec<Option<i64>>,
    pub interval_s: i64,
    pub analyse_ms: Vec<f64>,
    /// Examples of honest sessions blocked: (behaviour, session id).
    pub false_positive_examples: Vec<(Behaviour, String)>,
    /// Leaks missed or revoked later than one run after reaching 3 viewers:
    /// (session id, live, peak viewers, seconds late or None when never).
    pub slow_leaks: Vec<(String, bool, usize, Option<i64>)>,
}

impl Evaluation {
    pub fn precision(&self) -> f64 {
        let flagged = self.true_positives + self.false_positives;
        if flagged == 0 { 1.0 } else { self.true_positives as f64 / flagged as f64 }
    }

    pub fn recall(&self) -> f64 {
        let abusive = self.true_positives + self.false_negatives;
        if abusive == 0 { 1.0 } else { self.true_positives as f64 / abusive as f64 }
    }

    /// Share of leaks (reaching 3 viewers) revoked no later than one run interval after.
    pub fn within_one_run(&self) -> f64 {
        if self.latencies.is_empty() {
            return 1.0;
        }
        let ok = self.latencies.iter().filter(|l| l.is_some_and(|l| l <= self.interval_s)).count();
        ok as f64 / self.latencies.len() as f64
    }

    pub fn latency_percentile(&self, p: f64) -> Option<i64> {
        let mut v: Vec<i64> = self.latencies.iter().map(|l| l.unwrap_or(i64::MAX)).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        (v[i] != i64::MAX).then_some(v[i])
    }

    pub fn worst_honest_share(&self) -> (Behaviour, f64) {
        self.honest
            .iter()
            .map(|(b, (blocked, total))| (*b, if *total == 0 { 0.0 } else { *blocked as f64 / *total as f64 }))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((Behaviour::Plain, 0.0))
    }

    pub fn add(&mut self, traffic: &Traffic, runs: &QueryRuns, interval_s: i64) {
        self.interval_s = interval_s;
        self.analyse_ms.extend(&runs.analyse_ms);
        let last_run = runs.run_times.last().copied().unwrap_or(traffic.scenario.start);
        let active: std::collections::HashSet<u32> = traffic.requests.iter().map(|r| r.session).collect();
        for (i, s) in traffic.sessions.iter().enumerate() {
            if !active.contains(&(i as u32)) {
                continue;
            }
            let flagged_at = runs.first_flagged.get(&s.session_id).copied();
            match &s.truth {
                Truth::Honest(b) => {
                    let entry = self.honest.entry(*b).or_default();
                    entry.1 += 1;
                    if flagged_at.is_some() {
                        entry.0 += 1;
                        self.false_positives += 1;
                        if self.false_positive_examples.len() < 20 {
                            self.false_positive_examples.push((*b, s.session_id.clone()));
                        }
                    }
                }
                Truth::Leak { reaches_3_at, shared_from, .. } => {
                    // A leak counts once a full run interval of sharing was there to see; one
                    // that began sharing just before the replay ended is left out either way.
                    if *shared_from as i64 > last_run - interval_s {
                        continue;
                    }
                    self.leaks += 1;
                    if flagged_at.is_some() {
                        self.leaks_caught += 1;
                        self.true_positives += 1;
                    } else {
                        self.false_negatives += 1;
                    }
                    let peak = match &s.truth {
                        Truth::Leak { peak_viewers, .. } => *peak_viewers,
                        _ => 0,
                    };
                    if let Some(at3) = reaches_3_at
                        && (*at3 as i64) <= last_run - interval_s
                    {
                        let latency = flagged_at.map(|f| (f - *at3 as i64).max(0));
                        if latency.is_none_or(|l| l > interval_s) {
                            self.slow_leaks.push((s.session_id.clone(), s.live, peak, latency));
                        }
                        self.latencies.push(latency);
                    } else if flagged_at.is_none() {
                        self.slow_leaks.push((s.session_id.clone(), s.live, peak, None));
                    }
                }
                Truth::Restreamer => {
                    self.restreamers += 1;
                    if flagged_at.is_some() {
                        self.restreamers_caught += 1;
                        self.true_positives += 1;
                    } else {
                        self.false_negatives += 1;
                    }
                }
            }
        }
    }
}
