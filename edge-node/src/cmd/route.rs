//! `meridian route`: explain a routing decision — offline from a config file (nothing
//! measured yet: preference and config order, configured prices), or live from a running
//! edge's admin listener (`--admin`: measured RTT, TTFT, errors, ejections, demotions).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use meridian_fabric::config::load_config;
use meridian_fabric::route::{RouteRequest, Router};

#[derive(Args, Debug)]
pub struct RouteArgs {
    /// Edge/topology config file (offline explanation).
    #[arg(
        long,
        short,
        required_unless_present = "admin",
        conflicts_with = "admin"
    )]
    config: Option<PathBuf>,
    /// A running edge's admin URL, e.g. http://127.0.0.1:9090: explain on its live state.
    #[arg(long)]
    admin: Option<String>,
    /// Environment variable holding the admin bearer token (`[edge] admin_token_env`).
    #[arg(long, requires = "admin")]
    admin_token_env: Option<String>,
    /// Client area (ISO country code like `jp`, or a group like `eu`).
    #[arg(long)]
    area: Option<String>,
    /// Tenant name.
    #[arg(long)]
    tenant: Option<String>,
    /// Request residency policy.
    #[arg(long)]
    residency: Option<String>,
    /// Model name (default: the first model of the first worker).
    #[arg(long)]
    model: Option<String>,
    /// Shard key (session id). Default: derived from --prompt.
    #[arg(long)]
    shard_key: Option<String>,
    /// Prompt whose first bytes form the shard key when no --shard-key is given.
    #[arg(long, default_value = "")]
    prompt: String,
    /// Treat these workers as down (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    down: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &RouteArgs) -> ExitCode {
    if let Some(url) = &args.admin {
        return live(args, url);
    }
    let path = args
        .config
        .as_ref()
        .expect("clap requires --config or --admin");
    let config = match load_config(path) {
        Ok(c) => Arc::new(c),
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            return ExitCode::from(2);
        }
    };
    for d in &args.down {
        if !config.workers.iter().any(|w| &w.name == d) {
            eprintln!("meridian route: --down names unknown worker `{d}`");
            return ExitCode::from(2);
        }
    }
    let router = Router::new(config.clone());
    for (i, w) in config.workers.iter().enumerate() {
        router.worker(i).set_healthy(!args.down.contains(&w.name));
    }
    router.rebuild();
    let model = args
        .model
        .clone()
        .or_else(|| {
            config
                .workers
                .first()
                .and_then(|w| w.models.first().cloned())
        })
        .unwrap_or_default();
    let prefix = &args.prompt.as_bytes()[..args.prompt.len().min(config.routing.prefix_bytes)];
    let key = args.shard_key.as_deref().map_or(prefix, str::as_bytes);
    let req = RouteRequest {
        model: &model,
        area: args.area.as_deref().or(config.edge.default_area.as_deref()),
        tenant: args.tenant.as_deref(),
        residency: args.residency.as_deref(),
        shard_key: key,
        exclude: &[],
        pinned: None,
    };
    let explanation = router.explain(&req);
    let request = format!(
        "request: model={model} area={} tenant={} residency={}",
        req.area.unwrap_or("-"),
        req.tenant.unwrap_or("-"),
        req.residency.unwrap_or("-")
    );
    let note = config.routing.ring_key.is_none().then_some(
        "note: no [routing] ring_key is set, so worker placement uses a random per-process key",
    );
    print(args, &request, &explanation, note)
}

/// Prints the explanation; exit code 1 if routing failed.
fn print(
    args: &RouteArgs,
    request: &str,
    explanation: &meridian_fabric::route::Explanation,
    note: Option<&str>,
) -> ExitCode {
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&explanation).expect("explanations serialise")
        );
    } else {
        println!("{request}");
        println!("{explanation}");
        if let Some(n) = note {
            println!("{n}");
        }
    }
    if explanation.error.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Asks a running edge's admin listener to explain the decision on its live state.
fn live(args: &RouteArgs, url: &str) -> ExitCode {
    let mut query = Vec::new();
    for (k, v) in [
        ("model", &args.model),
        ("area", &args.area),
        ("tenant", &args.tenant),
        ("residency", &args.residency),
        ("shard_key", &args.shard_key),
    ] {
        if let Some(v) = v {
            query.push(format!("{k}={}", encode(v)));
        }
    }
    let token = match &args.admin_token_env {
        Some(var) => match std::env::var(var) {
            Ok(t) => Some(t),
            Err(_) => {
                eprintln!("meridian route: {var} is not set");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let path = format!("/routes/explain?{}", query.join("&"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts");
    let body = match rt.block_on(get(url, &path, token.as_deref())) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("meridian route: {url}{path}: {e}");
            return ExitCode::from(2);
        }
    };
    let explanation: meridian_fabric::route::Explanation = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("meridian route: {url} did not answer with an explanation: {e}");
            return ExitCode::from(2);
        }
    };
    let request = format!(
        "request (live, {url}): model={} area={} tenant={} residency={}",
        args.model.as_deref().unwrap_or("(first model)"),
        args.area.as_deref().unwrap_or("(edge default)"),
        args.tenant.as_deref().unwrap_or("-"),
        args.residency.as_deref().unwrap_or("-")
    );
    print(args, &request, &explanation, None)
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One plain-HTTP GET; the body of a 200.
async fn get(url: &str, path: &str, token: Option<&str>) -> anyhow::Result<bytes::Bytes> {
    use http_body_util::BodyExt;
    let authority = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("the admin URL must start with http://"))?
        .trim_end_matches('/');
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .map_err(|_| anyhow::anyhow!("connect timed out"))??;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header(hyper::header::HOST, authority);
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = send
        .send_request(req.body(http_body_util::Empty::<bytes::Bytes>::new())?)
        .await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        anyhow::bail!("{status}: {}", String::from_utf8_lossy(&body).trim());
    }
    Ok(body)
}
