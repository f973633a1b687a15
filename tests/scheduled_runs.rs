//! `revokd-bench scheduled-runs`, the process behind the speed benchmark's scheduled-run row:
//! one process, several runs, each started only when told, as a daemon's ticks are.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;

fn start(work: &Workdir, times: &[i64]) -> std::process::Child {
    work.write("revokd.toml", "state_dir = \"state\"\n[logs]\nurl = \"logs\"\n[detection]\nquery = \"reference\"\n");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_revokd-bench"));
    cmd.args(["scheduled-runs", "--config", "revokd.toml"]);
    for t in times {
        cmd.args(["--now", &rfc3339(*t)]);
    }
    cmd.current_dir(work.dir.path()).env("RUST_LOG", "warn").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

#[test]
fn each_run_waits_for_its_line_and_finds_what_arrived_meanwhile_with_the_earlier_runs_cache() {
    let work = Workdir::new();
    write_hour(&work.path("logs"), &honest_viewers());
    let mut child = start(&work, &[T0 + 600, T0 + 660]);
    let mut input = child.stdin.take().unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_run = || -> serde_json::Value { serde_json::from_str(&output.next().expect("a line per run").unwrap()).unwrap() };

    let first = next_run();
    assert_eq!(first["report"]["window_end"], rfc3339(T0 + 600));
    assert_eq!(first["report"]["counters"]["objects_parsed"], 1);
    assert!(first["wall_s"].as_f64().unwrap() > 0.0 && first["cpu_s"].as_f64().unwrap() > 0.0, "{first}");

    // An object that arrives between two runs: the second run, started by this line, reads it.
    let late = gzip(&log_text(&shared_session("leak3", 3)));
    std::fs::write(work.path("logs/E1EXAMPLE.2026-11-20-10.0002.gz"), late).unwrap();
    writeln!(input).unwrap();
    let second = next_run();
    assert_eq!(second["report"]["window_end"], rfc3339(T0 + 660));
    assert_eq!(second["report"]["counters"]["objects_parsed"], 1, "only the new object is parsed: {second}");
    assert_eq!(second["report"]["counters"]["objects_from_cache"], 1, "the first run's object comes from the cache: {second}");
    assert_eq!(flagged(&second["report"]).iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["leak3"]);
    assert!(second["wall_s"].as_f64().unwrap() > 0.0 && second["cpu_s"].as_f64().unwrap() > 0.0, "{second}");

    drop(input);
    assert!(child.wait().unwrap().success());
}

#[test]
fn input_closed_before_a_run_is_an_error_not_a_silent_end() {
    let work = Workdir::new();
    write_hour(&work.path("logs"), &honest_viewers());
    let mut child = start(&work, &[T0 + 600, T0 + 660]);
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1, "the first run is reported, no second");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stdin closed before the next run"), "{stderr}");
}
