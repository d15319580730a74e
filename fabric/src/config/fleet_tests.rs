//! The fleet-scale keys: `[[discovery]]`, `[quic_lb]`, `[edge] migration` and
//! `watch_config_ms`: defaults, values, and every bad value reported with its location.

use std::path::Path;

use super::tests::assert_located;
use super::*;

const TOPOLOGY: &str = include_str!("../demo/topology.toml");

/// The demo topology with `extra` appended, each line of it on the lines after the demo's.
fn with(extra: &str) -> (String, usize) {
    let base = TOPOLOGY.lines().count();
    (format!("{TOPOLOGY}\n{extra}"), base + 2)
}

#[test]
fn defaults_and_values() {
    let c = parse_config(TOPOLOGY, Path::new("demo.toml")).unwrap();
    assert!(c.discovery.is_empty());
    assert_eq!(c.quic_lb, None);
    assert!(c.edge.migration);
    assert_eq!(c.edge.watch_config, Some(DEFAULT_WATCH_CONFIG));
    let (src, _) = with(
        "[quic_lb]\nserver_id = \"0x0123456789abcdef\"\nconfig_id = 3\n\
         [[discovery]]\nname = \"seoul-dns\"\nkind = \"dns\"\nsrv = \"_meridian._udp.seoul.svc\"\n\
         region = \"seoul\"\nmodels = [\"llama-3-8b\"]\npin = \"w.pem\"\nresolver = \"10.96.0.10:53\"\n\
         [[discovery]]\nname = \"fra\"\nkind = \"kubernetes\"\nnamespace = \"ns\"\nservice = \"workers\"\npin = \"w.pem\"\n",
    );
    let c = parse_config(&src, Path::new("demo.toml")).unwrap();
    let lb = c.quic_lb.expect("set");
    assert_eq!(
        lb.server_id,
        [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]
    );
    assert_eq!((lb.config_id, lb.nonce_len), (3, 8));
    assert_eq!(c.discovery.len(), 2);
    assert_eq!(
        c.discovery[0].kind,
        DiscoveryKind::Dns {
            target: DnsTarget::Srv("_meridian._udp.seoul.svc".into()),
            resolver: Some("10.96.0.10:53".parse().unwrap()),
        }
    );
    assert_eq!(c.discovery[0].interval, DEFAULT_DISCOVERY_INTERVAL);
    assert!(
        matches!(&c.discovery[1].kind, DiscoveryKind::Kubernetes { service, port_name: None, .. } if service == "workers")
    );
    let off = TOPOLOGY.replacen(
        "[edge]\n",
        "[edge]\nwatch_config_ms = 0\nmigration = false\n",
        1,
    );
    let c = parse_config(&off, Path::new("demo.toml")).unwrap();
    assert_eq!(c.edge.watch_config, None);
    assert!(!c.edge.migration);
}

#[test]
fn bad_values_are_located() {
    let (src, first) = with(
        "[quic_lb]\nserver_id = \"0x0123\"\nnonce_len = 18\nconfig_id = 7\n\
         [[discovery]]\nname = \"a\"\nkind = \"dns\"\nhost = \"x.svc\"\nregion = \"mars\"\nmodels = [\"m\"]\npin = \"w.pem\"\n\
         [[discovery]]\nname = \"a\"\nkind = \"carrier-pigeon\"\n\
         [[discovery]]\nname = \"k\"\nkind = \"kubernetes\"\npin = \"w.pem\"\n",
    );
    let errs = parse_config(&src, Path::new("t.toml")).unwrap_err();
    let at = |n: usize| format!("t.toml:{}:", first + n);
    assert_located(
        &errs,
        &[
            (&at(2), "nonce_len 18 + a 2-byte server_id exceeds"),
            (&at(3), "config_id must be in 0..7"),
            (&at(8), "unknown region `mars`"),
            (&at(4), "`host` needs `port`"),
            (&at(12), "duplicate discovery `a`"),
            (&at(13), "unknown discovery kind `carrier-pigeon`"),
            (&at(14), "needs `namespace`"),
            (&at(14), "needs `service`"),
        ],
    );
    // Keys of the other kind, `port` beside `srv`, and too short an interval would silently
    // do nothing (or hammer the resolver).
    let (src, first) = with(
        "[[discovery]]\nname = \"d\"\nkind = \"dns\"\nsrv = \"_m._udp.svc\"\nport = 5433\nregion = \"seoul\"\nmodels = [\"m\"]\npin = \"w.pem\"\nnamespace = \"ns\"\ninterval_ms = 10\n\
         [[discovery]]\nname = \"k\"\nkind = \"kubernetes\"\nnamespace = \"ns\"\nservice = \"s\"\npin = \"w.pem\"\nhost = \"x\"\ninterval_ms = 1000\n\
         [[discovery]]\nname = \"p\"\nkind = \"dns\"\nhost = \"x\"\nport = 70000\nregion = \"seoul\"\nmodels = [\"m\"]\npin = \"w.pem\"\n",
    );
    let errs = parse_config(&src, Path::new("t.toml")).unwrap_err();
    let at = |n: usize| format!("t.toml:{}:", first + n);
    assert_located(
        &errs,
        &[
            (&at(4), "`port` has no effect with `srv`"),
            (&at(8), "`namespace` has no effect for kind = \"dns\""),
            (&at(9), "interval_ms must be at least 50"),
            (&at(16), "`host` has no effect for kind = \"kubernetes\""),
            (
                &at(17),
                "`interval_ms` has no effect for kind = \"kubernetes\"",
            ),
            (&at(22), "port must be in 1..65536"),
        ],
    );
    assert!(!errs.to_string().contains("needs `port`"), "{errs}");
    // Discovery sources' models count against the 64 model bits too.
    let models: Vec<String> = (0..70).map(|i| format!("\"m{i}\"")).collect();
    let (src, _) = with(&format!(
        "[[discovery]]\nname = \"many\"\nkind = \"kubernetes\"\nnamespace = \"ns\"\nservice = \"s\"\npin = \"w.pem\"\nmodels = [{}]\n",
        models.join(", ")
    ));
    let errs = parse_config(&src, Path::new("t.toml")).unwrap_err();
    assert!(
        errs.to_string()
            .contains("distinct models (workers' and discovery sources'); at most 64"),
        "{errs}"
    );
    // The front door's options without the front door.
    let src = TOPOLOGY.replacen(
        "[edge]\n",
        "[edge]\nhttp_tls = true\nalt_svc_port = 443\n",
        1,
    );
    let errs = parse_config(&src, Path::new("t.toml")).unwrap_err();
    assert_located(
        &errs,
        &[
            ("t.toml:6:", "`http_tls` needs the HTTP front door"),
            ("t.toml:7:", "`alt_svc_port` needs the HTTP front door"),
        ],
    );
    let (src, first) = with("[quic_lb]\nserver_id = \"0x00112233445566778899aabbccddeeff\"\n");
    let errs = parse_config(&src, Path::new("t.toml")).unwrap_err();
    assert_located(
        &errs,
        &[(&format!("t.toml:{}:", first + 1), "must be 1–15 bytes")],
    );
}
