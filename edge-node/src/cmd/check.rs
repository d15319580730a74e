//! `meridian check`.

use std::path::Path;
use std::process::ExitCode;

use meridian_fabric::config::{load_any, AnyConfig, OtlpSettings};

/// Where traces go, as a suffix of the summary line.
fn traces(t: Option<&OtlpSettings>) -> String {
    t.map(|t| {
        format!(
            "; traces to http://{}{} as `{}`",
            t.authority, t.path, t.service_name
        )
    })
    .unwrap_or_default()
}

pub fn run(path: &Path) -> ExitCode {
    match load_any(path) {
        Ok(AnyConfig::Edge(c)) => {
            for w in &c.warnings {
                eprintln!(
                    "{}:{}:{}: warning: {}",
                    w.file.display(),
                    w.line,
                    w.col,
                    w.message
                );
            }
            println!(
                "{}: valid edge config: {} regions, {} workers, {} residency policies, {} tenants{}",
                path.display(),
                c.regions.len(),
                c.workers.len(),
                c.residency.len(),
                c.tenants.len(),
                traces(c.telemetry.as_ref())
            );
            ExitCode::SUCCESS
        }
        Ok(AnyConfig::Worker(w)) => {
            println!(
                "{}: valid worker config: `{}` in region `{}`, models {:?}{}",
                path.display(),
                w.name,
                w.region,
                w.models,
                traces(w.telemetry.as_ref())
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            ExitCode::from(2)
        }
    }
}
