//! Mutual TLS on the edge → worker hop: a worker with `[tls] client_ca` serves only clients
//! whose certificate that CA issued. The edge presents `[upstream] client_cert`; a plain
//! client, or one with a certificate from another CA, gets a TLS alert and no inference.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use meridian_fabric::config::{parse_config, ServerTls};
use meridian_fabric::edge;
use meridian_fabric::shutdown::Shutdown;
use meridian_fabric::tls::Identity;
use meridian_fabric::worker;
use meridian_protocol::client::tls::ClientIdentity;
use meridian_protocol::client::{Client, ClientConfig, Request, Trust};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

use crate::support::*;

/// A CA; `leaf` issues certificates under it into `dir` as `<name>.pem` / `<name>.key`.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), issuer.pem()).unwrap();
        Ca {
            issuer,
            dir: dir.into(),
        }
    }

    fn leaf(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// Sends one request straight to the worker with `identity`; whether it was served.
async fn direct(
    addr: std::net::SocketAddr,
    ca: &Path,
    identity: Option<(PathBuf, PathBuf)>,
) -> bool {
    let mut cfg = ClientConfig::new(Trust::ca_file(ca).unwrap());
    cfg.identity = identity.map(|(c, k)| Arc::new(ClientIdentity::from_files(&c, &k).unwrap()));
    let Ok(client) = Client::connect(addr, cfg).await else {
        return false;
    };
    let served = match client.generate(Request::new("m", "hi")).await {
        Ok(g) => g.collect().await.is_ok(),
        Err(_) => false,
    };
    client.close().await;
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_requiring_client_certs_serves_the_edge_and_refuses_everyone_else() {
    let dir = scratch("mtls");
    let ca = Ca::new(&dir, "ca");
    let (worker_cert, worker_key) = ca.leaf("worker", ExtendedKeyUsagePurpose::ServerAuth);
    let (edge_cert, edge_key) = ca.leaf("edge", ExtendedKeyUsagePurpose::ClientAuth);
    let rogue = Ca::new(&dir, "rogue-ca");
    let rogue_client = rogue.leaf("rogue", ExtendedKeyUsagePurpose::ClientAuth);

    let tls = ServerTls::Files {
        cert: worker_cert,
        key: worker_key,
    };
    let mut wc = worker_config(tls.clone(), (20, 10, 32));
    wc.client_ca = Some(dir.join("ca.pem"));
    let w = worker::spawn(wc, &Identity::load(&tls).unwrap(), Shutdown::new()).unwrap();

    // Refused: no client certificate, and one from another CA. Neither is served.
    assert!(
        !direct(w.addr, &dir.join("ca.pem"), None).await,
        "no client cert"
    );
    assert!(
        !direct(w.addr, &dir.join("ca.pem"), Some(rogue_client)).await,
        "client cert from another CA"
    );
    assert_eq!(w.stats.snapshot().completed, 0, "no inference was served");

    // Accepted: the edge presents its certificate; requests flow through it.
    let toml = format!(
        "[edge]\nlisten = \"127.0.0.1:0\"\n[tls]\ndev_cert_dir = \"{d}/edge-dev\"\n\
         [upstream]\nca = \"{d}/ca.pem\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n\
         [auth]\nrequired = false\n[[region]]\nname = \"r\"\n\
         [[worker]]\nname = \"w\"\nregion = \"r\"\naddress = \"{}\"\nmodels = [\"m\"]\n",
        edge_cert.display(),
        edge_key.display(),
        w.addr,
        d = dir.display()
    );
    let config = Arc::new(parse_config(&toml, &dir.join("edge.toml")).unwrap());
    let id = Identity::load(&config.edge.tls).unwrap();
    let e = edge::spawn(config, &id, Shutdown::new()).unwrap();
    within(
        "edge connects with its client certificate",
        e.router.wait_until(|r| r.healthy_workers() == 1),
    )
    .await;
    let trust = Trust::pin_file(id.cert_path.as_ref().unwrap()).unwrap();
    let client = Client::connect(e.addr, ClientConfig::new(trust))
        .await
        .unwrap();
    let (text, end) = served(&client, "m").await;
    assert!(!text.is_empty() && end.completion_tokens > 0);
    assert_eq!(w.stats.snapshot().completed, 1);
    client.close().await;
    e.stop().await;
    w.stop().await;
}

#[test]
fn mtls_config_errors_have_locations() {
    let dir = scratch("mtls-config");
    let toml = "[upstream]\nca = \"nope-ca.pem\"\nclient_cert = \"nope.pem\"\n\
                [tls]\nclient_ca = \"x.pem\"\n[auth]\nrequired = false\n\
                [[region]]\nname = \"r\"\n[[worker]]\nname = \"w\"\nregion = \"r\"\n\
                address = \"127.0.0.1:1\"\nmodels = [\"m\"]\n";
    let errs = parse_config(toml, &dir.join("e.toml"))
        .unwrap_err()
        .to_string();
    for want in [
        "e.toml:3:15: [upstream] needs both `client_cert` and `client_key`",
        "e.toml:5:13: [tls] client_ca belongs in a worker config",
        "e.toml:2:6: [upstream] ca",
    ] {
        assert!(errs.contains(want), "missing `{want}` in:\n{errs}");
    }
}
