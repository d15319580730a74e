use std::path::Path;

use super::*;

const TOPOLOGY: &str = include_str!("../demo/topology.toml");

/// `errs` holds exactly the `(file:line:col, message part)` pairs of `expect`.
pub(super) fn assert_located(errs: &ConfigErrors, expect: &[(&str, &str)]) {
    let text = errs.to_string();
    for (loc, msg) in expect {
        assert!(
            errs.0
                .iter()
                .any(|e| e.to_string().starts_with(loc) && e.message.contains(msg)),
            "missing `{loc}: …{msg}…` in:\n{text}"
        );
    }
    assert_eq!(errs.0.len(), expect.len(), "{text}");
}

#[test]
fn demo_topology_is_valid() {
    let c = parse_config(TOPOLOGY, Path::new("demo.toml")).unwrap();
    assert_eq!(c.regions.len(), 5);
    assert_eq!(c.workers.len(), 10);
    assert_eq!(c.area_groups["fr"], vec!["eu".to_string()]);
    assert_eq!(c.residency["de-sovereign"], {
        let mut s = RegionSet::default();
        s.insert(c.region_id("frankfurt-sovereign").unwrap());
        s
    });
}

#[test]
fn every_error_is_reported_with_file_and_line() {
    let src = r#"
[[region]]
name = "seoul"

[[region]]
name = "seoul"

[areas]
jp = ["seoul", "atlantis"]

[residency]
eu = ["frankfurt"]

[tenants]
bund = { residency = "de-sovereign" }

[routing]
load_factor = 0.5

[[worker]]
name = "w1"
region = "mars"
address = "not-an-address"
models = ["m"]
pin = "c.pem"
"#;
    let errs = parse_config(src, Path::new("bad.toml")).unwrap_err();
    let expect = [
        ("bad.toml:1:1", "no [auth] section"),
        ("bad.toml:6:8", "duplicate region `seoul`"),
        ("bad.toml:9:16", "unknown region `atlantis`"),
        ("bad.toml:12:7", "unknown region `frankfurt`"),
        ("bad.toml:15:22", "unknown residency policy `de-sovereign`"),
        ("bad.toml:18:15", "load_factor"),
        ("bad.toml:22:10", "unknown region `mars`"),
        ("bad.toml:23:11", "not a socket address"),
    ];
    assert_located(&errs, &expect);
}

#[test]
fn syntax_and_unknown_fields_have_locations() {
    let errs = parse_config(
        "[[region]]\nname = \"a\"\ncolour = \"red\"\n",
        Path::new("x.toml"),
    )
    .unwrap_err();
    assert_eq!((errs.0[0].line, errs.0[0].col), (3, 1), "{errs}");
    assert!(errs.0[0].message.contains("colour"), "{errs}");
    let errs = parse_config("[[region]\nname = 1", Path::new("x.toml")).unwrap_err();
    assert_eq!(errs.0[0].line, 1, "{errs}");
}

#[test]
fn worker_config_validation() {
    let ok = parse_worker_config(
        "[worker]\nname = \"seoul-1\"\nregion = \"seoul\"\nmodels = [\"m\"]\n[backend]\nkind = \"synthetic\"\nttft_ms = 5\n",
        Path::new("w.toml"),
    )
    .unwrap();
    assert_eq!(
        ok.backend,
        Backend::Synthetic(SyntheticBackend {
            ttft: Duration::from_millis(5),
            ..Default::default()
        })
    );
    let errs = parse_worker_config(
        "[worker]\nname = \"bad name!\"\nregion = \"seoul\"\nmodels = []\nmax_concurrent = 0\n",
        Path::new("w.toml"),
    )
    .unwrap_err();
    assert_eq!(errs.0.len(), 3, "{errs}");
    assert!(errs.0.iter().all(|e| e.line > 0));
}

#[test]
fn tls_needs_cert_and_key_together() {
    let errs = parse_worker_config(
        "[worker]\nname = \"a\"\nregion = \"r\"\nmodels = [\"m\"]\n[tls]\ncert = \"c.pem\"\n",
        Path::new("w.toml"),
    )
    .unwrap_err();
    assert!(
        errs.to_string().contains("w.toml:6:8: [tls] needs both"),
        "{errs}"
    );
}

#[test]
fn telemetry_is_off_by_default_and_validated_with_locations() {
    let w = "[worker]\nname = \"a\"\nregion = \"r\"\nmodels = [\"m\"]\n";
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
        assert_eq!(
            parse_worker_config(w, Path::new("w.toml"))
                .unwrap()
                .telemetry,
            None
        );
    }
    let on =
        format!("{w}[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318/\"\nsample_ratio = 0.5\n");
    let t = parse_worker_config(&on, Path::new("w.toml"))
        .unwrap()
        .telemetry
        .unwrap();
    assert_eq!(
        (t.authority.as_str(), t.path.as_str()),
        ("127.0.0.1:4318", "/v1/traces")
    );
    assert_eq!((t.sample_ratio, t.max_queue), (0.5, 8192));
    assert!(t.service_name == "meridian-worker" || std::env::var_os("OTEL_SERVICE_NAME").is_some());
    let no_port = format!("{w}[telemetry]\notlp_endpoint = \"http://collector\"\n");
    let t = parse_worker_config(&no_port, Path::new("w.toml"))
        .unwrap()
        .telemetry
        .unwrap();
    assert_eq!(t.authority, "collector:80");
    let v6 = format!("{w}[telemetry]\notlp_endpoint = \"http://[::1]\"\n");
    let t = parse_worker_config(&v6, Path::new("w.toml"))
        .unwrap()
        .telemetry
        .unwrap();
    assert_eq!(t.authority, "[::1]:80");
    let full = format!(
        "{w}[telemetry]\notlp_endpoint = \"http://c:4318/otlp/v1/traces\"\nservice_name = \"w\"\n"
    );
    let t = parse_worker_config(&full, Path::new("w.toml"))
        .unwrap()
        .telemetry
        .unwrap();
    assert_eq!(
        (
            t.authority.as_str(),
            t.path.as_str(),
            t.service_name.as_str()
        ),
        ("c:4318", "/otlp/v1/traces", "w")
    );
    // A worker exports no metrics: its metrics keys would do nothing.
    let metrics = format!(
        "{w}[telemetry]\notlp_endpoint = \"http://c:4318\"\nmetrics = true\nmetrics_interval_ms = 5\n"
    );
    let errs = parse_worker_config(&metrics, Path::new("w.toml")).unwrap_err();
    assert_located(
        &errs,
        &[
            ("w.toml:7:", "`metrics`: a worker exports no metrics"),
            (
                "w.toml:8:",
                "`metrics_interval_ms`: a worker exports no metrics",
            ),
        ],
    );
    let bad = "[telemetry]\notlp_endpoint = \"https://collector:4318\"\nsample_ratio = 2.0\nexport_interval_ms = 0\nmetrics_interval_ms = 0\n";
    let errs = parse_config(bad, Path::new("e.toml")).unwrap_err();
    let text = errs.to_string();
    for want in [
        "e.toml:2:17: otlp_endpoint must start with http://",
        "e.toml:3:16: sample_ratio must be in 0.0..=1.0",
        "e.toml:4:22: export_interval_ms must be at least 1",
        "e.toml:5:23: metrics_interval_ms must be at least 1",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
        let errs =
            parse_config("[telemetry]\nservice_name = \"e\"\n", Path::new("e.toml")).unwrap_err();
        assert!(
            errs.to_string().contains("has no `otlp_endpoint`"),
            "{errs}"
        );
    }
}

#[test]
fn upstream_stall_timeout_applies_unless_zero() {
    let c = parse_config(TOPOLOGY, Path::new("demo.toml")).unwrap();
    assert_eq!(
        c.edge.upstream_stall_timeout,
        Some(DEFAULT_UPSTREAM_STALL_TIMEOUT)
    );
    let src = TOPOLOGY.replacen("[edge]\n", "[edge]\nupstream_stall_timeout_ms = 0\n", 1);
    let c = parse_config(&src, Path::new("demo.toml")).unwrap();
    assert_eq!(c.edge.upstream_stall_timeout, None);
}

#[test]
fn configs_that_would_fail_at_run_time_fail_check() {
    let edge = |extra: &str| {
        let src = format!(
            "[edge]\n{extra}\n[auth]\nrequired = false\n[[region]]\nname = \"r\"\n[[worker]]\nname = \"w\"\nregion = \"r\"\naddress = \"127.0.0.1:1\"\nmodels = [\"m\"]\npin = \"p.pem\"\n"
        );
        parse_config(&src, Path::new("e.toml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(edge("intake_timeout_ms = 0")
        .contains("e.toml:2:21: intake_timeout_ms must be in 10..600001"));
    assert!(
        edge("admin = \"127.0.0.1:9000\"\nhttp = \"127.0.0.1:9000\"")
            .contains("e.toml:2:9: admin and http are both 127.0.0.1:9000")
    );
    assert!(edge("admin = \"0.0.0.0:9000\"").contains("is not on loopback"));
    assert!(
        edge("admin = \"0.0.0.0:9000\"\nadmin_public = true").contains("needs `admin_token_env`")
    );
    assert!(edge("admin_token_env = \"MERIDIAN_TEST_UNSET_VAR\"").contains("is not set"));
    assert_eq!(edge("admin = \"127.0.0.1:9000\""), "");
    let tls = "[tls]\ncert = \"missing-cert.pem\"\nkey = \"missing-key.pem\"";
    let src = format!("{tls}\n[auth]\nrequired = false\n[[region]]\nname = \"r\"\n");
    let errs = parse_config(&src, Path::new("e.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        errs.contains("e.toml:2:8: [tls] cert `missing-cert.pem` cannot be read"),
        "{errs}"
    );
    assert!(errs.contains("e.toml:3:7: [tls] key"), "{errs}");
    let worker = "[worker]\nname = \"w\"\nregion = \"r\"\nmodels = [\"m\"]\nload_report_ms = 0\n";
    let errs = parse_worker_config(worker, Path::new("w.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        errs.contains("w.toml:5:18: load_report_ms must be in 1..60001"),
        "{errs}"
    );
}

#[test]
fn a_missing_pin_file_is_a_located_warning() {
    let src = "[auth]\nrequired = false\n[[region]]\nname = \"r\"\n[[worker]]\nname = \"w\"\nregion = \"r\"\naddress = \"127.0.0.1:1\"\nmodels = [\"m\"]\npin = \"not-written-yet.pem\"\n";
    let c = parse_config(src, Path::new("e.toml")).expect("a warning, not an error");
    assert_eq!(c.warnings.len(), 1);
    let w = c.warnings[0].to_string();
    assert!(
        w.starts_with("e.toml:10:7: pin `not-written-yet.pem` of worker `w` does not exist"),
        "{w}"
    );
}
