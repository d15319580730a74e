//! `[routing]` scoring keys, `[health]` and the link tuning of `[upstream]` / `[worker]`:
//! defaults, values, and every bad value reported with its location.

use std::path::Path;

use super::tests::assert_located;
use super::*;

const TOPOLOGY: &str = include_str!("../demo/topology.toml");

fn with(table: &str, lines: &str) -> String {
    TOPOLOGY.replacen(&format!("[{table}]\n"), &format!("[{table}]\n{lines}\n"), 1)
}

#[test]
fn defaults_are_latency_bbr_and_documented_thresholds() {
    let c = parse_config(TOPOLOGY, Path::new("demo.toml")).unwrap();
    assert_eq!(c.routing.objective, Objective::Latency);
    assert_eq!(c.routing.hysteresis, DEFAULT_HYSTERESIS);
    assert_eq!(c.health, HealthSettings::default());
    assert_eq!(c.upstream.link, LinkTuning::default());
    assert_eq!(c.upstream.link.congestion, Congestion::Bbr);
    assert_eq!(c.upstream.connections_per_worker, 1);
}

#[test]
fn values_are_read() {
    let src = with(
        "routing",
        "objective = \"balanced\"\nhysteresis = 0.2\nweights = { latency = 2.0, cost = 1.0, carbon = 0.0 }",
    );
    let src = src.replacen(
        "[[region]]",
        "[health]\nhold_ms = 2000\neject_consecutive_failures = 7\nmax_ejected_percent = 30\n\n\
         [upstream]\ncongestion = \"cubic\"\npacket_threshold = 10\ntime_threshold = 1.5\n\
         connections_per_worker = 4\ninitial_rtt_ms = 250\ninitial_window = 30000\n\n[[region]]",
        1,
    );
    let c = parse_config(&src, Path::new("demo.toml")).unwrap();
    assert_eq!(c.routing.objective, Objective::Balanced);
    assert_eq!(c.routing.hysteresis, 0.2);
    assert_eq!(
        c.routing.weights,
        Weights {
            latency: 2.0,
            cost: 1.0,
            carbon: 0.0
        }
    );
    assert_eq!(c.health.hold, Duration::from_secs(2));
    assert_eq!(c.health.eject_consecutive_failures, 7);
    assert_eq!(c.health.max_ejected_percent, 30);
    let u = &c.upstream;
    assert_eq!(u.connections_per_worker, 4);
    assert_eq!(u.initial_rtt, Duration::from_millis(250));
    assert_eq!(
        u.link,
        LinkTuning {
            congestion: Congestion::Cubic,
            initial_window: Some(30_000),
            packet_threshold: 10,
            time_threshold: 1.5
        }
    );
}

#[test]
fn bad_values_are_reported_with_locations() {
    let src = r#"[auth]
required = false
[routing]
objective = "fastest"
hysteresis = 1.5
weights = { latency = 0.0, cost = 0.0, carbon = 0.0 }
[health]
degraded_error_rate = 2.0
eject_backoff_min_ms = 5000
eject_backoff_max_ms = 1000
score_interval_ms = 1
[upstream]
congestion = "vegas"
packet_threshold = 1
time_threshold = 9.0
connections_per_worker = 0
[[region]]
name = "a"
"#;
    let errs = parse_config(src, Path::new("bad.toml")).unwrap_err();
    let expect = [
        ("bad.toml:4:13", "objective `fastest`"),
        ("bad.toml:5:14", "hysteresis must be in 0.0..1.0"),
        ("bad.toml:6:11", "weights must not all be 0"),
        ("bad.toml:8:23", "degraded_error_rate must be in 0.0..=1.0"),
        ("bad.toml:10:24", "eject_backoff_max_ms must not be below"),
        ("bad.toml:11:21", "score_interval_ms must be at least 10"),
        (
            "bad.toml:13:14",
            "congestion `vegas` is not one of cubic, newreno, bbr",
        ),
        ("bad.toml:14:20", "packet_threshold must be in 3..1001"),
        ("bad.toml:15:18", "time_threshold must be in 1.0..=4.0"),
        ("bad.toml:16:26", "connections_per_worker must be in 1..17"),
    ];
    assert_located(&errs, &expect);
    let unknown = parse_config("[health]\nejection = 1\n", Path::new("u.toml")).unwrap_err();
    assert!(
        unknown.to_string().starts_with("u.toml:2:1") && unknown.to_string().contains("ejection"),
        "{unknown}"
    );
}

#[test]
fn workers_tune_their_token_direction() {
    let base = "[worker]\nname = \"w\"\nregion = \"r\"\nmodels = [\"m\"]\n";
    let c = parse_worker_config(
        &format!("{base}congestion = \"cubic\"\npacket_threshold = 5\n"),
        Path::new("w.toml"),
    )
    .unwrap();
    assert_eq!(c.link.congestion, Congestion::Cubic);
    assert_eq!(c.link.packet_threshold, 5);
    assert_eq!(
        parse_worker_config(base, Path::new("w.toml")).unwrap().link,
        LinkTuning::default()
    );
    let e = parse_worker_config(
        &format!("{base}congestion = \"reno\"\n"),
        Path::new("w.toml"),
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("w.toml:5:14"), "{e}");
}
