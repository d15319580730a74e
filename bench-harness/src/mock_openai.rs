//! `meridian-bench mock-openai`: an OpenAI-compatible server with synthetic tokens, so every
//! gateway (and Meridian's OpenAI backend) is measured against the same backend.
//!
//! `POST /v1/chat/completions` and `POST /v1/completions` (streaming: SSE in the exact
//! `chat.completion.chunk` / `text_completion` format, `stream_options.include_usage`,
//! `data: [DONE]`; non-streaming: one JSON object), `GET /v1/models`. `fail STATUS` on stdin
//! makes completions answer that HTTP status (an inference server gone bad) until `ok`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// `mock-openai` options.
#[derive(Args, Debug, Clone)]
pub struct MockArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Delay before the first token, milliseconds.
    #[arg(long, default_value_t = 20)]
    pub ttft_ms: u64,
    /// Delay between tokens, milliseconds.
    #[arg(long, default_value_t = 20)]
    pub itl_ms: u64,
    /// Tokens per response when the request sets no `max_tokens`.
    #[arg(long, default_value_t = 32)]
    pub max_tokens: u64,
    /// Model name reported by `/v1/models`.
    #[arg(long, default_value = "llama-3-8b")]
    pub model: String,
    /// Non-zero: the HTTP status completions answer with (stdin `fail STATUS` / `ok`).
    #[arg(skip)]
    pub failing: Arc<std::sync::atomic::AtomicU16>,
}

/// Serves until the process is stopped. Prints `listening on ADDR` first.
pub async fn run(args: MockArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "{}",
        json!({ "mock_openai": listener.local_addr()?.to_string() })
    );
    let failing = args.failing.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let status = match l.split_whitespace().collect::<Vec<_>>()[..] {
                ["ok"] => Some(0),
                ["fail", code] => code.parse::<u16>().ok().filter(|c| (400..600).contains(c)),
                _ => None,
            };
            match status {
                Some(c) => {
                    failing.store(c, Ordering::Relaxed);
                    println!("{}", json!({ "failing": c }));
                }
                None => eprintln!("mock-openai: unknown command `{l}` (fail STATUS, ok)"),
            }
        }
    });
    serve(listener, Arc::new(args)).await
}

/// Accept loop on an already-bound listener.
pub async fn serve(listener: tokio::net::TcpListener, args: Arc<MockArgs>) -> anyhow::Result<()> {
    let ids = Arc::new(AtomicU64::new(0));
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (args, ids) = (args.clone(), ids.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, args.clone(), ids.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

type Resp = Response<MockBody>;

async fn handle(
    req: Request<Incoming>,
    args: Arc<MockArgs>,
    ids: Arc<AtomicU64>,
) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_owned();
    Ok(match (req.method(), path.as_str()) {
        (&Method::GET, "/health" | "/health_generate") => {
            json_response(StatusCode::OK, json!({"status": "ok"}))
        }
        (&Method::GET, "/v1/models") => json_response(
            StatusCode::OK,
            json!({"object": "list", "data": [{"id": args.model, "object": "model", "created": 0, "owned_by": "meridian-mock"}]}),
        ),
        (&Method::POST, "/v1/chat/completions" | "/v1/completions")
            if args.failing.load(Ordering::Relaxed) != 0 =>
        {
            let status = StatusCode::from_u16(args.failing.load(Ordering::Relaxed))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error(status, "the mock was told to fail")
        }
        (&Method::POST, "/v1/chat/completions" | "/v1/completions") => {
            let chat = path.ends_with("chat/completions");
            match Limited::new(req.into_body(), 1 << 20)
                .collect()
                .await
                .map(|b| b.to_bytes())
            {
                Ok(body) => match serde_json::from_slice::<Value>(&body) {
                    Ok(v) => completion(v, chat, &args, ids.fetch_add(1, Ordering::Relaxed)),
                    Err(e) => error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
                },
                Err(_) => error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, &format!("no route for {path}")),
    })
}

fn error(status: StatusCode, message: &str) -> Resp {
    json_response(
        status,
        json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}}),
    )
}

fn json_response(status: StatusCode, v: Value) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(MockBody::Full(Full::new(Bytes::from(v.to_string()))))
        .expect("valid response")
}

/// The synthetic text of token `i`.
fn token(i: u64) -> String {
    const WORDS: [&str; 8] = [
        "mock", "tokens", "flow", "over", "sse", "to", "every", "gateway",
    ];
    format!("{} ", WORDS[(i % 8) as usize])
}

fn completion(req: Value, chat: bool, args: &MockArgs, n: u64) -> Resp {
    let model = req["model"].as_str().unwrap_or(&args.model).to_owned();
    let max = req["max_tokens"]
        .as_u64()
        .or(req["max_completion_tokens"].as_u64())
        .unwrap_or(args.max_tokens);
    let count = max;
    let finish = if req["max_tokens"].is_u64() {
        "length"
    } else {
        "stop"
    };
    let prompt_tokens = prompt_len(&req, chat).div_ceil(4);
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let id = if chat {
        format!("chatcmpl-mock-{n}")
    } else {
        format!("cmpl-mock-{n}")
    };
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": count, "total_tokens": prompt_tokens + count});
    if !req["stream"].as_bool().unwrap_or(false) {
        let text: String = (0..count).map(token).collect();
        let choice = if chat {
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": finish})
        } else {
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
        };
        let object = if chat {
            "chat.completion"
        } else {
            "text_completion"
        };
        return json_response(
            StatusCode::OK,
            json!({"id": id, "object": object, "created": created, "model": model, "choices": [choice], "usage": usage}),
        );
    }
    let include_usage = req["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let (ttft, itl) = (
        Duration::from_millis(args.ttft_ms),
        Duration::from_millis(args.itl_ms),
    );
    tokio::spawn(async move {
        let object = if chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let chunk = |choice: Value, usage: Option<&Value>| {
            let mut v = json!({"id": id, "object": object, "created": created, "model": model, "choices": [choice]});
            if include_usage {
                v["usage"] = usage.cloned().unwrap_or(Value::Null);
            }
            Bytes::from(format!("data: {v}\n\n"))
        };
        let delta = |content: Option<&str>, finish: Option<&str>, role: bool| {
            if chat {
                let mut d = json!({});
                if role {
                    d["role"] = "assistant".into();
                }
                if let Some(c) = content {
                    d["content"] = c.into();
                }
                json!({"index": 0, "delta": d, "logprobs": null, "finish_reason": finish})
            } else {
                json!({"index": 0, "text": content.unwrap_or(""), "logprobs": null, "finish_reason": finish})
            }
        };
        if chat
            && tx
                .send(chunk(delta(Some(""), None, true), None))
                .await
                .is_err()
        {
            return;
        }
        tokio::time::sleep(ttft).await;
        for i in 0..count {
            if i > 0 {
                tokio::time::sleep(itl).await;
            }
            if tx
                .send(chunk(delta(Some(&token(i)), None, false), None))
                .await
                .is_err()
            {
                return; // client went away: stop generating
            }
        }
        let _ = tx.send(chunk(delta(None, Some(finish), false), None)).await;
        if include_usage {
            let mut v = json!({"id": id, "object": object, "created": created, "model": model, "choices": []});
            v["usage"] = usage;
            let _ = tx.send(Bytes::from(format!("data: {v}\n\n"))).await;
        }
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(MockBody::Stream(rx))
        .expect("valid response")
}

fn prompt_len(req: &Value, chat: bool) -> u64 {
    if chat {
        req["messages"].as_array().map_or(0, |m| {
            m.iter()
                .map(|m| m["content"].as_str().map_or(0, str::len) as u64)
                .sum()
        })
    } else {
        req["prompt"].as_str().map_or(0, |p| p.len() as u64)
    }
}

/// A whole body or a channel of SSE chunks.
pub enum MockBody {
    /// Complete body.
    Full(Full<Bytes>),
    /// Streamed chunks.
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            MockBody::Full(f) => Pin::new(f).poll_frame(cx),
            MockBody::Stream(rx) => rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::http::HttpTarget;
    use crate::target::Job;

    async fn start() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let args = MockArgs {
            listen: addr,
            ttft_ms: 1,
            itl_ms: 1,
            max_tokens: 7,
            model: "m".into(),
            failing: Arc::default(),
        };
        tokio::spawn(serve(listener, Arc::new(args)));
        format!("http://{addr}")
    }

    fn job(max_tokens: Option<u64>) -> Job {
        Job {
            model: "m".into(),
            prompt: Bytes::from_static(b"hi"),
            max_tokens,
            session: Some("s".into()),
            area: None,
            tenant: None,
            credential: None,
        }
    }

    #[tokio::test]
    async fn streams_openai_chunks_to_the_sse_client() {
        let base = start().await;
        let target = HttpTarget::new(&format!("{base}/v1/chat/completions"))
            .await
            .unwrap();
        let out = target.send(&job(Some(5)), Instant::now()).await;
        assert_eq!(out.error, None);
        assert_eq!(out.tokens, 5);
        assert!(out.ttft.is_some());
        assert_eq!(out.itls.len(), 4);
        // Defaults apply without max_tokens, and the pooled connection is reused.
        let out = target.send(&job(None), Instant::now()).await;
        assert_eq!((out.error, out.tokens), (None, 7));
        let out = HttpTarget::new(&format!("{base}/v1/completions"))
            .await
            .unwrap()
            .send(&job(Some(3)), Instant::now())
            .await;
        assert_eq!((out.error, out.tokens), (None, 3));
    }

    #[tokio::test]
    async fn exact_chunk_format_and_errors() {
        let base = start().await;
        let addr = base.trim_start_matches("http://");
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sr, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":2,"stream_options":{"include_usage":true}}"#;
        let req = Request::post("/v1/chat/completions")
            .header("host", addr)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = sr.send_request(req).await.unwrap();
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let text = String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.last(), Some(&"data: [DONE]"));
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        assert!(chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "length");
        let usage = &chunks.last().unwrap()["usage"];
        assert_eq!(usage["completion_tokens"], 2);
        assert_eq!(
            chunks.last().unwrap()["choices"].as_array().unwrap().len(),
            0
        );

        let req = Request::post("/v1/chat/completions")
            .header("host", addr)
            .body(Full::new(Bytes::from_static(b"{oops")))
            .unwrap();
        let resp = sr.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let v: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
}
