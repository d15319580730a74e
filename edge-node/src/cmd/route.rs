//! `meridian route`: explain a routing decision offline, from a config file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use meridian_fabric::config::load_config;
use meridian_fabric::route::{RouteRequest, Router};

#[derive(Args, Debug)]
pub struct RouteArgs {
    /// Edge/topology config file.
    #[arg(long, short)]
    config: PathBuf,
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
    let config = match load_config(&args.config) {
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
    };
    let explanation = router.explain(&req);
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&explanation).expect("explanations serialise")
        );
    } else {
        println!(
            "request: model={model} area={} tenant={} residency={}",
            req.area.unwrap_or("-"),
            req.tenant.unwrap_or("-"),
            req.residency.unwrap_or("-")
        );
        println!("{explanation}");
        if config.routing.ring_key.is_none() {
            println!("note: no [routing] ring_key is set, so worker placement uses a random per-process key");
        }
    }
    if explanation.error.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
