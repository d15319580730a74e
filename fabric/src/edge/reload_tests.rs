//! Reload decisions without a running edge: what a changed setting rebuilds or needs a restart
//! for, and the composition of the running topology (discovered workers join under the same
//! rules as the static ones, `config::Members`; each one left out is named once).

use std::path::Path;
use std::sync::Arc;

use super::{changes, Composition};
use crate::config::{parse_config, DiscoverySource};
use crate::discovery::Discovered;

const BASE: &str = "[edge]\nlisten = \"127.0.0.1:0\"\n[tls]\ndev_cert_dir = \"certs\"\n\
    [[region]]\nname = \"seoul\"\n\
    [[worker]]\nname = \"static\"\nregion = \"seoul\"\naddress = \"127.0.0.1:7001\"\nmodels = [\"m\"]\npin = \"w.pem\"\n\
    [[discovery]]\nname = \"pool\"\nkind = \"dns\"\nhost = \"pool.svc\"\nport = 7000\nregion = \"seoul\"\nmodels = [\"m\"]\npin = \"w.pem\"\n[auth]\nrequired = false\n";

#[test]
fn discovered_workers_join_under_the_static_rules() {
    let base = Arc::new(parse_config(BASE, Path::new("edge.toml")).unwrap());
    let source: &DiscoverySource = &base.discovery[0];
    let found = |id: &str, region: &str, port: u16, models: &[String]| {
        Discovered::new(source, id, region, models, ([127, 0, 0, 1], port).into())
    };
    let m = vec!["m".to_owned()];
    let many: Vec<String> = (0..64).map(|i| format!("x{i}")).collect();
    let mut comp = Composition::new(base.clone());
    comp.found.insert(
        "pool".into(),
        vec![
            found("ok", "seoul", 7002, &m),
            // The static worker's address: a second connection to the same worker.
            found("clash", "seoul", 7001, &m),
            // The name `ok` again (a second address of the same pod name).
            found("ok", "seoul", 7003, &m),
            found("far", "mars", 7004, &m),
            found("wide", "seoul", 7005, &many),
        ],
    );
    let config = comp.compose();
    let names: Vec<&str> = config.workers.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["static", "pool/ok"]);
    let ignored: Vec<(&str, &str)> = (comp.ignored.iter())
        .map(|(w, why)| (w.as_str(), why.as_str()))
        .collect();
    assert_eq!(
        ignored,
        [
            ("pool/clash", "its address is another worker's"),
            ("pool/far", "its region `mars` is not configured"),
            ("pool/ok", "its name is taken by another worker"),
            ("pool/wide", "it would take the topology past 64 models"),
        ]
    );
    // Composed again with the same finds: the same topology.
    assert_eq!(comp.compose().workers, config.workers);
}

#[test]
fn every_changed_edge_setting_is_applied_or_named() {
    let base = parse_config(BASE, Path::new("edge.toml")).unwrap();
    let with = |line: &str| {
        let src = BASE.replacen("[edge]\n", &format!("[edge]\n{line}\n"), 1);
        parse_config(&src, Path::new("edge.toml")).unwrap()
    };
    // Live: nothing rebuilt, nothing named.
    assert_eq!(
        changes(&base, &with("max_prompt_bytes = 1000")),
        (false, vec![])
    );
    // The client-facing server config is rebuilt (new connections get it).
    assert_eq!(changes(&base, &with("gso = false")), (true, vec![]));
    assert_eq!(
        changes(&base, &with("keep_alive_ms = 1000")),
        (true, vec![])
    );
    // Bound at start: named.
    assert_eq!(
        changes(&base, &with("pop = \"elsewhere\"")),
        (false, vec!["[edge] pop"])
    );
    // max_connections is live for QUIC; the HTTP front door's is bound at start.
    assert_eq!(
        changes(&base, &with("max_connections = 10")),
        (false, vec![])
    );
    let http = with("http = \"127.0.0.1:0\"");
    let fewer = with("http = \"127.0.0.1:0\"\nmax_connections = 10");
    assert_eq!(
        changes(&http, &fewer).1,
        ["[edge] max_connections of the HTTP front door (QUIC connections use the new value)"]
    );
}
