//! Kubernetes discovery: the EndpointSlices of one Service (label
//! `kubernetes.io/service-name`), watched through the API server (`kube`'s watcher: list,
//! then watch, relisting with backoff after errors). Endpoints that are `ready` get new
//! requests; endpoints that are not — `serving && terminating` ones included — leave the
//! topology and are drained, so their streams finish while no new request reaches them.
//!
//! The region of a slice's endpoints is the source's `region`; a slice labelled
//! `meridian.io/region` with another one is skipped, so a label can never move workers into a
//! region (and a residency policy) the operator did not name. Only a source without `region`
//! takes it from the label. The model is the slice's `meridian.io/model` label, else the
//! source's `models` (the EndpointSlice controller copies the Service's labels onto its
//! slices).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tracing::{info, warn};

use super::Discovered;
use crate::config::{DiscoveryKind, DiscoverySource};

/// Label naming the region of a slice's endpoints.
pub const REGION_LABEL: &str = "meridian.io/region";
/// Label naming the model a slice's endpoints serve.
pub const MODEL_LABEL: &str = "meridian.io/model";

/// The workers `slices` describe for `source`: one per ready, non-terminating endpoint (by
/// pod, first address), on the slice port named `port_name` (default: the first UDP port).
/// Deterministic: slices are taken in name order. Also returns why each slice that gave no
/// workers was skipped (`slice `name`: reason`), for the caller to log when that changes.
pub fn endpoint_slice_workers<'a>(
    source: &DiscoverySource,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> (Vec<Discovered>, Vec<String>) {
    let port_name = match &source.kind {
        DiscoveryKind::Kubernetes { port_name, .. } => port_name.as_deref(),
        DiscoveryKind::Dns { .. } => None,
    };
    let mut sorted: Vec<&EndpointSlice> = slices.into_iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out: BTreeMap<String, Discovered> = BTreeMap::new();
    let mut skipped = Vec::new();
    for slice in sorted {
        let name = slice.metadata.name.as_deref().unwrap_or_default();
        let mut skip = |why: String| skipped.push(format!("slice `{name}`: {why}"));
        let labels = slice.metadata.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).cloned();
        // Residency rests on regions: a label may name the region only where the operator
        // did not; it can never move workers into another region than the source's.
        let region = match (label(REGION_LABEL), &source.region) {
            (Some(l), Some(r)) if &l != r => {
                skip(format!(
                    "labelled {REGION_LABEL}={l}, not the source's region `{r}`"
                ));
                continue;
            }
            (_, Some(r)) => r.clone(),
            (Some(l), None) => l,
            (None, None) => {
                skip(format!(
                    "no {REGION_LABEL} label, and the source has no region"
                ));
                continue;
            }
        };
        let models = label(MODEL_LABEL).map_or_else(|| source.models.clone(), |m| vec![m]);
        if models.is_empty() {
            skip(format!(
                "no {MODEL_LABEL} label, and the source has no models"
            ));
            continue;
        }
        let ports = slice.ports.as_deref().unwrap_or_default();
        let port = match port_name {
            Some(name) => ports.iter().find(|p| p.name.as_deref() == Some(name)),
            None => ports
                .iter()
                .find(|p| p.protocol.as_deref() == Some("UDP"))
                .or(ports.first()),
        };
        let Some(port) = port
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            skip(match port_name {
                Some(n) => format!("no port named `{n}` (port_name)"),
                None => "no port".into(),
            });
            continue;
        };
        for ep in &slice.endpoints {
            let c = ep.conditions.as_ref();
            // The API: a nil `ready` means ready; a nil `terminating` means not terminating.
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            if !ready || terminating {
                continue;
            }
            let Some(ip) = ep.addresses.iter().find_map(|a| a.parse::<IpAddr>().ok()) else {
                continue; // FQDN slices name hosts, not addresses
            };
            let address = SocketAddr::new(ip, port);
            let id = (ep.target_ref.as_ref())
                .and_then(|t| t.name.clone())
                .unwrap_or_else(|| address.to_string());
            let w = Discovered::new(source, &id, &region, &models, address);
            out.entry(w.name.clone()).or_insert(w);
        }
    }
    (out.into_values().collect(), skipped)
}

/// A client for `kubeconfig`, or the in-cluster / `$KUBECONFIG` one.
async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| e.to_string())?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|e| e.to_string())?
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// Watches the source's EndpointSlices and hands every new worker set to `found`; runs until
/// dropped.
pub(super) async fn run<F, Fut>(source: &DiscoverySource, stats: &super::SourceStats, found: F)
where
    F: Fn(Vec<Discovered>) -> Fut,
    Fut: Future<Output = bool>,
{
    let DiscoveryKind::Kubernetes {
        namespace,
        service,
        kubeconfig,
        ..
    } = &source.kind
    else {
        return;
    };
    let client = super::retrying(&source.name, stats, "reach the Kubernetes API", || {
        client(kubeconfig.as_deref())
    })
    .await;
    let api: kube::Api<EndpointSlice> = kube::Api::namespaced(client, namespace);
    let selector = format!("kubernetes.io/service-name={service}");
    let mut events = watcher::watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .boxed();
    let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut listing: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut last: Option<Vec<Discovered>> = None;
    let mut last_skipped: Vec<String> = Vec::new();
    let mut failing = false;
    while let Some(event) = events.next().await {
        let key = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
        match event {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(s)) => {
                listing.insert(key(&s), s);
                continue;
            }
            Ok(Event::InitDone) => slices = std::mem::take(&mut listing),
            Ok(Event::Apply(s)) => {
                slices.insert(key(&s), s);
            }
            Ok(Event::Delete(s)) => {
                slices.remove(&key(&s));
            }
            Err(e) => {
                stats.failed();
                if !failing {
                    warn!(source = %source.name, "discovery: watching EndpointSlices failed, keeping the last set: {e}");
                    failing = true;
                }
                continue;
            }
        }
        failing = false;
        stats.answered();
        let (workers, skipped) = endpoint_slice_workers(source, slices.values());
        if skipped != last_skipped {
            for why in skipped.iter().filter(|w| !last_skipped.contains(w)) {
                warn!(source = %source.name, "discovery: EndpointSlice skipped: {why}");
            }
            last_skipped = skipped;
        }
        if last.as_ref() != Some(&workers) {
            info!(source = %source.name, workers = workers.len(), "discovery: EndpointSlices changed");
            if found(workers.clone()).await {
                last = Some(workers);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::UpstreamTrust;

    fn source(port_name: Option<&str>) -> DiscoverySource {
        DiscoverySource {
            name: "k8s".into(),
            kind: DiscoveryKind::Kubernetes {
                namespace: "inference".into(),
                service: "workers".into(),
                port_name: port_name.map(str::to_owned),
                kubeconfig: None,
            },
            region: Some("frankfurt".into()),
            models: vec!["llama-3-8b".into()],
            weight: 1,
            server_name: "localhost".into(),
            trust: UpstreamTrust::Pin("cert.pem".into()),
            interval: Duration::from_secs(5),
        }
    }

    /// An EndpointSlice as the API server serves it.
    fn slice(name: &str, labels: serde_json::Value, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": { "name": name, "namespace": "inference", "labels": labels },
            "addressType": "IPv4",
            "ports": [
                { "name": "metrics", "port": 9090, "protocol": "TCP" },
                { "name": "meridian", "port": 5433, "protocol": "UDP" }
            ],
            "endpoints": endpoints
        }))
        .expect("a valid EndpointSlice")
    }

    #[test]
    fn ready_endpoints_are_workers_and_terminating_ones_drain() {
        let s = slice(
            "workers-abc",
            serde_json::json!({ "kubernetes.io/service-name": "workers" }),
            serde_json::json!([
                { "addresses": ["10.0.0.1"], "conditions": { "ready": true, "serving": true, "terminating": false },
                  "targetRef": { "kind": "Pod", "name": "vllm-0" } },
                // Serving while terminating: finishes its streams, gets no new ones.
                { "addresses": ["10.0.0.2"], "conditions": { "ready": false, "serving": true, "terminating": true },
                  "targetRef": { "kind": "Pod", "name": "vllm-1" } },
                // Starting: not ready yet.
                { "addresses": ["10.0.0.3"], "conditions": { "ready": false, "serving": false },
                  "targetRef": { "kind": "Pod", "name": "vllm-2" } },
                // No conditions: the API says ready.
                { "addresses": ["10.0.0.4"] }
            ]),
        );
        let (w, skipped) = endpoint_slice_workers(&source(None), &[s]);
        assert!(skipped.is_empty(), "{skipped:?}");
        let got: Vec<(&str, String)> = w
            .iter()
            .map(|w| (w.name.as_str(), w.address.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("k8s/10.0.0.4:5433", "10.0.0.4:5433".to_owned()),
                ("k8s/vllm-0", "10.0.0.1:5433".to_owned())
            ],
            "the first UDP port, ready endpoints only"
        );
        assert!(w
            .iter()
            .all(|w| w.region == "frankfurt" && w.models == ["llama-3-8b"]));
    }

    #[test]
    fn labels_set_region_and_model_and_port_names_pick_the_port() {
        let s = slice(
            "seoul-1",
            serde_json::json!({ "meridian.io/region": "seoul", "meridian.io/model": "qwen-7b" }),
            serde_json::json!([{ "addresses": ["10.1.0.9"], "conditions": { "ready": true } }]),
        );
        // A label naming another region than the source's cannot move the workers there.
        let (w, skipped) = endpoint_slice_workers(&source(None), std::slice::from_ref(&s));
        assert!(w.is_empty());
        assert_eq!(
            skipped,
            ["slice `seoul-1`: labelled meridian.io/region=seoul, not the source's region `frankfurt`"]
        );
        let mut unset = source(Some("metrics"));
        unset.region = None;
        let (w, _) = endpoint_slice_workers(&unset, std::slice::from_ref(&s));
        assert_eq!(w[0].region, "seoul");
        assert_eq!(w[0].models, ["qwen-7b"]);
        assert_eq!(w[0].address.port(), 9090);
        let mut nope = source(Some("nope"));
        nope.region = None;
        let (w, skipped) = endpoint_slice_workers(&nope, &[s]);
        assert!(w.is_empty(), "no such port");
        assert_eq!(
            skipped,
            ["slice `seoul-1`: no port named `nope` (port_name)"]
        );
    }

    #[test]
    fn a_pod_in_two_slices_is_one_worker_and_fqdn_slices_are_skipped() {
        let ep =
            serde_json::json!([{ "addresses": ["10.0.0.1"], "targetRef": { "name": "vllm-0" } }]);
        let mut v6 = slice(
            "b-v6",
            serde_json::json!({}),
            serde_json::json!([{ "addresses": ["fd00::1"], "targetRef": { "name": "vllm-0" } }]),
        );
        v6.address_type = "IPv6".into();
        let v4 = slice("a-v4", serde_json::json!({}), ep);
        let (w, _) = endpoint_slice_workers(&source(None), &[v6.clone(), v4]);
        assert_eq!(w.len(), 1);
        assert_eq!(
            w[0].address.to_string(),
            "10.0.0.1:5433",
            "slices in name order"
        );
        let mut fqdn = slice(
            "c",
            serde_json::json!({}),
            serde_json::json!([{ "addresses": ["pod.example"] }]),
        );
        fqdn.address_type = "FQDN".into();
        assert!(endpoint_slice_workers(&source(None), &[fqdn]).0.is_empty());
        let mut no_region = source(None);
        no_region.region = None;
        let (w, skipped) = endpoint_slice_workers(&no_region, &[v6]);
        assert!(w.is_empty(), "no region: skipped");
        assert_eq!(
            skipped,
            ["slice `b-v6`: no meridian.io/region label, and the source has no region"]
        );
    }
}
