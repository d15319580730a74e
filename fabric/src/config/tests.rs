use std::path::Path;

use super::*;

const TOPOLOGY: &str = include_str!("../demo/topology.toml");

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
    let text = errs.to_string();
    let expect = [
        ("bad.toml:6:8", "duplicate region `seoul`"),
        ("bad.toml:9:16", "unknown region `atlantis`"),
        ("bad.toml:12:7", "unknown region `frankfurt`"),
        ("bad.toml:15:22", "unknown residency policy `de-sovereign`"),
        ("bad.toml:18:15", "load_factor"),
        ("bad.toml:22:10", "unknown region `mars`"),
        ("bad.toml:23:11", "not a socket address"),
    ];
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
