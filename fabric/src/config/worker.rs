//! `RawWorkerConfig` → `WorkerConfig`: a worker's own file and its backend.

use std::path::Path;
use std::time::Duration;

use super::ctx::Ctx;
use super::raw::{RawBackend, RawWorkerConfig};
use super::*;

/// Parses and validates a worker config. `file` is used in error locations.
pub fn parse_worker_config(src: &str, file: &Path) -> Result<WorkerConfig, ConfigErrors> {
    let mut cx = Ctx::new(src, file);
    let Some(raw) = cx.parse::<RawWorkerConfig>() else {
        return Err(cx.into_errors());
    };
    let span = raw.worker.span();
    let w = raw.worker.get_ref();
    cx.name(&w.name, "worker name");
    cx.name(&w.region, "region name");
    let backend = match raw.backend.as_ref().map(|b| b.get_ref()) {
        None => Backend::Synthetic(SyntheticBackend::default()),
        Some(b) if b.kind.get_ref() == "openai" => Backend::OpenAi(openai_backend(&mut cx, b)),
        Some(b) => {
            if b.kind.get_ref() != "synthetic" {
                cx.err(
                    Some(b.kind.span()),
                    format!(
                        "unknown backend kind `{}`: expected `synthetic` or `openai`",
                        b.kind.get_ref()
                    ),
                );
            }
            let d = SyntheticBackend::default();
            Backend::Synthetic(SyntheticBackend {
                ttft: cx.millis(b.ttft_ms.as_ref(), "ttft_ms", 600_000, d.ttft),
                itl: cx.millis(b.itl_ms.as_ref(), "itl_ms", 60_000, d.itl),
                max_tokens: cx.count(
                    b.max_tokens.as_ref(),
                    "max_tokens",
                    1..1_000_001,
                    d.max_tokens,
                ),
            })
        }
    };
    let config = WorkerConfig {
        name: w.name.get_ref().clone(),
        region: w.region.get_ref().clone(),
        listen: cx.addr(w.listen.as_ref(), DEFAULT_WORKER_LISTEN),
        models: cx.models(w.models.as_ref(), span),
        max_concurrent: cx.count(
            w.max_concurrent.as_ref(),
            "max_concurrent",
            1..100_001,
            DEFAULT_MAX_CONCURRENT.into(),
        ) as u32,
        max_prompt_bytes: cx.count(
            w.max_prompt_bytes.as_ref(),
            "max_prompt_bytes",
            1..(64 << 20) + 1,
            meridian_protocol::limits::DEFAULT_MAX_PROMPT_BYTES as u64,
        ) as usize,
        load_report: Duration::from_millis(cx.count(
            w.load_report_ms.as_ref(),
            "load_report_ms",
            1..60_001,
            DEFAULT_LOAD_REPORT.as_millis() as u64,
        )),
        health: w
            .health
            .as_ref()
            .map(|h| cx.addr(Some(h), "127.0.0.1:9091")),
        ack_eliciting_threshold: w
            .ack_eliciting_threshold
            .as_ref()
            .map(|t| cx.count(Some(t), "ack_eliciting_threshold", 1..1001, 2) as u32),
        link: cx.link(&w.link(), "[worker]"),
        tls: cx.tls(raw.tls.as_ref()),
        client_ca: (raw.tls.as_ref())
            .and_then(|t| t.client_ca.as_ref())
            .map(|c| cx.file(c, "[tls] client_ca")),
        backend,
        telemetry: cx.telemetry(raw.telemetry.as_ref(), "meridian-worker", false),
    };
    cx.finish(config)
}

fn openai_backend(cx: &mut Ctx<'_>, b: &RawBackend) -> OpenAiBackend {
    let (authority, path_prefix) = match &b.base_url {
        None => {
            cx.err(
                Some(b.kind.span()),
                "backend `openai` needs `base_url`, e.g. \"http://127.0.0.1:8000/v1\"",
            );
            (String::new(), String::new())
        }
        Some(u) => cx.http_url(
            u.get_ref(),
            Some(u.span()),
            "base_url",
            "run the worker beside the server",
        ),
    };
    let api_key = match (&b.api_key, &b.api_key_env) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(var)) => match std::env::var(var.get_ref()) {
            Ok(k) => Some(k),
            Err(_) => {
                cx.err(
                    Some(var.span()),
                    format!("environment variable `{}` is not set", var.get_ref()),
                );
                None
            }
        },
        (None, None) => None,
    };
    let chat_continuation = match b.chat_continuation.as_ref() {
        None => ChatContinuation::default(),
        Some(v) => match v.get_ref().as_str() {
            "continue_final_message" => ChatContinuation::ContinueFinalMessage,
            "prefill" => ChatContinuation::Prefill,
            "off" => ChatContinuation::Off,
            other => {
                cx.err(
                    Some(v.span()),
                    format!("chat_continuation `{other}`: expected continue_final_message, prefill or off"),
                );
                ChatContinuation::default()
            }
        },
    };
    OpenAiBackend {
        authority,
        path_prefix,
        api_key,
        model_map: b.model_map.clone(),
        timeout: cx.millis(
            b.timeout_ms.as_ref(),
            "timeout_ms",
            600_000,
            Duration::from_secs(30),
        ),
        chat_continuation,
    }
}
