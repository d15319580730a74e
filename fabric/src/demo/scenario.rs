//! The demo scenario: six rules, seven requests.

use std::time::Instant;

use meridian_protocol::client::{Client, Event, Request};
use meridian_protocol::ErrorCode;
use serde::Serialize;

use super::{Demo, MODEL};

/// What one demo request did.
#[derive(Clone, Debug, Serialize)]
pub struct StepOutcome {
    /// Scenario step (1–6; step 4 sends two requests).
    pub step: u32,
    /// What the step shows.
    pub title: &'static str,
    /// Client area.
    pub area: &'static str,
    /// Tenant, if any.
    pub tenant: Option<&'static str>,
    /// Residency policy in force (tenant's or request's), if any.
    pub residency: Option<&'static str>,
    /// Shard key sent, if any.
    pub shard_key: Option<&'static str>,
    /// Region that served it.
    pub region: Option<String>,
    /// Worker that served it.
    pub worker: Option<String>,
    /// Tokens received.
    pub tokens: u64,
    /// The streamed text.
    pub text: String,
    /// Time to first token seen by the client, milliseconds.
    pub ttft_ms: Option<f64>,
    /// Error code name, if the request failed.
    pub error: Option<String>,
    /// Error message, if the request failed.
    pub message: Option<String>,
    /// What the step expects.
    pub expected: String,
    /// Whether the outcome matched.
    pub ok: bool,
}

struct Spec {
    step: u32,
    /// Tenant whose credential the request carries, when not its own `tenant`.
    credential_of: Option<&'static str>,
    title: &'static str,
    area: &'static str,
    tenant: Option<&'static str>,
    residency: Option<&'static str>,
    shard_key: Option<&'static str>,
    prompt: &'static str,
}

async fn send(client: &Client, s: &Spec) -> StepOutcome {
    let mut req = Request::new(MODEL, s.prompt);
    req.headers.area = Some(s.area.into());
    req.headers.tenant = s.tenant.map(Into::into);
    // Every demo request authenticates: as its tenant, or as `acme` when it names none.
    let owner = s.credential_of.or(s.tenant).unwrap_or("acme");
    req.headers.credential =
        super::demo_key(owner).map(|k| meridian_protocol::Credential(k.into()));
    req.headers.shard_key = s.shard_key.map(|k| bytes::Bytes::from_static(k.as_bytes()));
    let mut out = StepOutcome {
        step: s.step,
        title: s.title,
        area: s.area,
        tenant: s.tenant,
        residency: s.residency,
        shard_key: s.shard_key,
        region: None,
        worker: None,
        tokens: 0,
        text: String::new(),
        ttft_ms: None,
        error: None,
        message: None,
        expected: String::new(),
        ok: false,
    };
    let start = Instant::now();
    let result = async {
        let mut g = client.generate(req).await?;
        while let Some(ev) = g.next().await? {
            match ev {
                Event::Routed(r) => {
                    out.region = Some(r.region);
                    out.worker = Some(r.worker);
                }
                Event::Tokens(t) => {
                    out.ttft_ms
                        .get_or_insert_with(|| start.elapsed().as_secs_f64() * 1e3);
                    out.tokens += 1;
                    out.text.push_str(&t);
                }
                Event::End(_) => {}
            }
        }
        Ok::<_, meridian_protocol::client::ClientError>(())
    }
    .await;
    if let Err(e) = result {
        out.error = Some(
            e.code()
                .map_or_else(|| "CONNECTION".to_owned(), |c| c.to_string()),
        );
        out.message = Some(match e {
            meridian_protocol::client::ClientError::Remote { message, .. } => message,
            other => other.to_string(),
        });
    }
    out
}

fn expect_region(mut o: StepOutcome, region: &str) -> StepOutcome {
    o.expected = format!("served by {region}");
    o.ok = o.error.is_none() && o.region.as_deref() == Some(region) && o.tokens > 0;
    o
}

/// Runs the scenario against a fresh [`Demo`] (it stops regions as it goes).
pub async fn run_scenario(demo: &mut Demo, client: &Client) -> Vec<StepOutcome> {
    let mut out = Vec::new();
    let spec = |step, title, area, tenant, shard_key, prompt| Spec {
        step,
        credential_of: None,
        title,
        area,
        tenant,
        residency: if tenant == Some("bund") {
            Some("de-sovereign")
        } else {
            None
        },
        shard_key,
        prompt,
    };
    let tokyo_user = spec(
        1,
        "Tokyo user goes to the nearby Seoul pool",
        "jp",
        None,
        None,
        "What is the capital of Korea?",
    );
    out.push(expect_region(send(client, &tokyo_user).await, "seoul"));
    let paris = spec(
        2,
        "Paris user goes to Frankfurt (area fr is in group eu)",
        "fr",
        None,
        None,
        "Bonjour! Summarise GDPR.",
    );
    out.push(expect_region(send(client, &paris).await, "frankfurt"));
    let bund = spec(
        3,
        "Sovereign tenant `bund` goes to the sovereign pool",
        "de",
        Some("bund"),
        None,
        "Prüfe den Antrag.",
    );
    out.push(expect_region(
        send(client, &bund).await,
        "frankfurt-sovereign",
    ));
    // Identity decides the tenant, so a client cannot pick another tenant's policy.
    let mut impostor = spec(
        3,
        "Claiming tenant `bund` with acme's key is refused",
        "de",
        Some("bund"),
        None,
        "Prüfe den Antrag.",
    );
    impostor.credential_of = Some("acme");
    let mut o = send(client, &impostor).await;
    o.expected = "UNAUTHORIZED".into();
    o.ok = o.error.as_deref() == Some(ErrorCode::UNAUTHORIZED.name().expect("named"))
        && o.region.is_none();
    out.push(o);

    let sticky = spec(
        4,
        "Same shard key twice lands on the same worker",
        "jp",
        None,
        Some("session-42"),
        "Continue our chat.",
    );
    let first = expect_region(send(client, &sticky).await, "seoul");
    let mut second = expect_region(send(client, &sticky).await, "seoul");
    second.expected = format!(
        "same worker as before ({})",
        first.worker.as_deref().unwrap_or("?")
    );
    second.ok = second.ok && first.ok && second.worker == first.worker;
    out.push(first);
    out.push(second);

    demo.stop_region("seoul").await;
    let failover = spec(
        5,
        "Seoul's workers stopped: the Tokyo user fails over to Tokyo",
        "jp",
        None,
        None,
        "What is the capital of Korea?",
    );
    out.push(expect_region(send(client, &failover).await, "tokyo"));

    let frankfurt = demo.config.region_id("frankfurt").expect("demo region");
    let landed_before = frankfurt_requests(demo, frankfurt);
    demo.stop_region("frankfurt-sovereign").await;
    let closed = spec(
        6,
        "Sovereign pool stopped: `bund` fails closed, never spills to frankfurt",
        "de",
        Some("bund"),
        None,
        "Prüfe den Antrag.",
    );
    let mut o = send(client, &closed).await;
    let landed_after = frankfurt_requests(demo, frankfurt);
    o.expected = "RESIDENCY_UNAVAILABLE, nothing sent to frankfurt".into();
    o.ok = o.error.as_deref() == Some(ErrorCode::RESIDENCY_UNAVAILABLE.name().expect("named"))
        && o.region.is_none()
        && landed_after == landed_before;
    out.push(o);
    out
}

/// Requests the frankfurt workers have seen (completed, cancelled, rejected, in flight).
fn frankfurt_requests(demo: &Demo, region: usize) -> u64 {
    demo.config
        .workers
        .iter()
        .zip(&demo.workers)
        .filter(|(w, _)| w.region == region)
        .filter_map(|(_, h)| h.as_ref())
        .map(|h| {
            let s = h.stats.snapshot();
            s.completed + s.cancelled + s.rejected + s.in_flight + s.queued
        })
        .sum()
}
