//! The `openai` backend: the worker proxies each request to an OpenAI-compatible server
//! (vLLM, llama.cpp, TGI, Ollama…) over kept-alive HTTP/1.1 connections, streaming (SSE),
//! and turns the stream into TOKENS/END. Upstream failures map to wire codes; when the edge
//! cancels, the in-flight upstream request is dropped, which closes its connection.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use meridian_protocol::{body_format, ErrorCode, ErrorFrame, FinishReason, RequestHeaders};
use serde_json::{json, Value};

use super::emit::{Emitter, GenError};
use super::request::Continuation;
use crate::config::{ChatContinuation, OpenAiBackend};
use crate::http1::Pool;

/// Most idle upstream connections kept.
const MAX_IDLE: usize = 256;

/// A pooled client for one upstream server.
pub(crate) struct OpenAiClient {
    cfg: OpenAiBackend,
    pool: Pool,
}

impl std::fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("cfg", &self.cfg)
            .finish()
    }
}

fn failed(code: ErrorCode, message: impl Into<String>) -> GenError {
    GenError::Failed(ErrorFrame::new(code, message))
}

/// The wire code for an upstream HTTP status.
fn code_of(status: u16) -> ErrorCode {
    match status {
        400 | 422 => ErrorCode::BAD_REQUEST,
        401 | 403 => ErrorCode::UNAUTHORIZED,
        404 => ErrorCode::MODEL_NOT_FOUND,
        413 => ErrorCode::TOO_LARGE,
        429 => ErrorCode::RATE_LIMITED,
        503 => ErrorCode::OVERLOADED,
        504 => ErrorCode::DEADLINE_EXCEEDED,
        _ => ErrorCode::UPSTREAM_FAILED,
    }
}

impl OpenAiClient {
    pub(crate) fn new(cfg: OpenAiBackend) -> Self {
        OpenAiClient {
            pool: Pool::new(cfg.authority.clone(), MAX_IDLE),
            cfg,
        }
    }

    /// The upstream path and body for a request (the model mapped, streaming forced on; a
    /// continuation's answer so far added, PROTOCOL.md §4.10).
    fn upstream_request(
        &self,
        h: &RequestHeaders,
        prompt: &[u8],
        cont: Option<&Continuation>,
    ) -> Result<Option<(String, Vec<u8>)>, GenError> {
        let model = self
            .cfg
            .model_map
            .get(&h.model)
            .cloned()
            .unwrap_or_else(|| h.model.clone());
        let (endpoint, mut body) = match h.body_format.unwrap_or(body_format::PROMPT) {
            body_format::PROMPT => {
                let text = String::from_utf8_lossy(prompt);
                (
                    "chat/completions",
                    json!({ "messages": [{ "role": "user", "content": text }] }),
                )
            }
            f => {
                let v: Value = serde_json::from_slice(prompt).map_err(|e| {
                    failed(
                        ErrorCode::BAD_REQUEST,
                        format!("request body is not JSON: {e}"),
                    )
                })?;
                if !v.is_object() {
                    return Err(failed(
                        ErrorCode::BAD_REQUEST,
                        "request body must be a JSON object",
                    ));
                }
                (
                    if f == body_format::OPENAI_CHAT {
                        "chat/completions"
                    } else {
                        "completions"
                    },
                    v,
                )
            }
        };
        if let Some(c) = cont {
            let chat = endpoint == "chat/completions";
            continue_body(&mut body, chat, c, self.cfg.chat_continuation)?;
        }
        body["model"] = model.into();
        body["stream"] = true.into();
        body["stream_options"] = json!({ "include_usage": true });
        // One choice: the worker relays `choices[0]` only, so more would be generated (and
        // spent against the tenant's tokens) for nothing.
        if let Some(obj) = body.as_object_mut() {
            obj.remove("best_of");
            if obj.contains_key("n") {
                obj.insert("n".into(), 1.into());
            }
        }
        // HEADERS `max_tokens` is the ceiling (the edge reserved the tenant's tokens for it):
        // a body's own limits may lower it, never raise it.
        if let Some(m) = h.max_tokens {
            let mut any = false;
            for field in ["max_tokens", "max_completion_tokens"] {
                if let Some(v) = body.get(field).and_then(|v| v.as_u64()) {
                    body[field] = v.min(m).into();
                    any = true;
                } else if body.get(field).is_some_and(|v| !v.is_null()) {
                    body[field] = m.into(); // not a count the server could honour: the ceiling
                    any = true;
                }
            }
            if !any {
                body["max_tokens"] = m.into();
            }
        }
        // A continuation with no tokens left: the answer is complete (`None`).
        let spent = ["max_tokens", "max_completion_tokens"]
            .iter()
            .any(|f| body.get(*f).and_then(Value::as_u64) == Some(0));
        if cont.is_some() && spent {
            return Ok(None);
        }
        let body = serde_json::to_vec(&body).expect("JSON values serialise");
        Ok(Some((format!("{}/{endpoint}", self.cfg.path_prefix), body)))
    }

    /// Runs one request upstream and emits its tokens; `traceparent` continues the trace
    /// on the inference server (vLLM and TGI read it).
    pub(crate) async fn run(
        &self,
        h: &RequestHeaders,
        prompt: Bytes,
        cont: Option<Continuation>,
        traceparent: Option<String>,
        mut emit: Emitter<'_>,
    ) -> Result<(), GenError> {
        let offset = cont.as_ref().map_or(0, |c| c.offset);
        let Some((path, body)) = self.upstream_request(h, &prompt, cont.as_ref())? else {
            // The answer had reached its limit when its worker failed (before END): nothing
            // is left to generate.
            let prompt_tokens = (prompt.len() as u64).div_ceil(4);
            return emit.end(FinishReason::Length, prompt_tokens, offset).await;
        };
        let mut req = hyper::Request::post(path)
            .header("host", &self.cfg.authority)
            .header("content-type", "application/json")
            .header("accept", "text/event-stream");
        if let Some(k) = &self.cfg.api_key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        if let Some(t) = traceparent {
            req = req.header("traceparent", t);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| failed(ErrorCode::INTERNAL, e.to_string()))?;
        let start = Instant::now();
        let mut sr = tokio::time::timeout(self.cfg.timeout, self.pool.get())
            .await
            .map_err(|_| failed(ErrorCode::UPSTREAM_FAILED, "backend connect timed out"))?
            .map_err(|e| failed(ErrorCode::UPSTREAM_FAILED, format!("backend {e}")))?;
        let resp = tokio::time::timeout(
            self.cfg.timeout.saturating_sub(start.elapsed()),
            sr.send_request(req),
        )
        .await
        .map_err(|_| {
            failed(
                ErrorCode::DEADLINE_EXCEEDED,
                "backend did not answer in time",
            )
        })?
        .map_err(|e| {
            failed(
                ErrorCode::UPSTREAM_FAILED,
                format!("backend request failed: {e}"),
            )
        })?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if status != 200 {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            return Err(failed(
                code_of(status),
                format!("backend answered {status}: {message}"),
            ));
        }
        let mut sse = SseState::default();
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                failed(
                    ErrorCode::UPSTREAM_FAILED,
                    format!("backend stream broke: {e}"),
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                let event = buf.split_to(end + 2);
                for text in sse.event(&event)? {
                    emit.token(text.as_bytes()).await?;
                }
            }
            if sse.done {
                break;
            }
        }
        if !sse.done {
            return Err(failed(
                ErrorCode::UPSTREAM_FAILED,
                "backend stream ended without [DONE]",
            ));
        }
        self.pool.put(sr);
        // A continuation's END counts the whole answer; the server counted the answer so far
        // as prompt (≈ `offset` tokens), which is taken back out.
        let completion = sse.completion_tokens.unwrap_or(emit.tokens) + offset;
        let prompt_tokens = (sse.prompt_tokens.map(|p| p.saturating_sub(offset)))
            .unwrap_or((prompt.len() as u64).div_ceil(4));
        emit.end(sse.finish, prompt_tokens, completion).await
    }
}

/// Request fields whose answer another worker cannot continue faithfully: tools and
/// function calls, several choices, log probabilities, constrained decoding (PROTOCOL.md
/// §4.10).
const NOT_RESUMABLE: &[&str] = &[
    "tools",
    "functions",
    "tool_choice",
    "function_call",
    "logprobs",
    "top_logprobs",
    "echo",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "structured_outputs",
    "grammar",
    "json_schema",
];

/// Why a request body cannot be continued by another worker, if it cannot. Shared with the
/// HTTP front door, which does not mark such requests resumable.
pub fn not_resumable(body: &Value) -> Option<String> {
    for field in NOT_RESUMABLE {
        match body.get(*field) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::String(s)) if *field == "tool_choice" && s == "none" => {}
            Some(_) => return Some(format!("the request uses `{field}`")),
        }
    }
    if body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Some("the request asks for n > 1 choices".into());
    }
    if body
        .get("best_of")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return Some("the request uses `best_of`".into());
    }
    if body.get("prompt").is_some_and(|p| !p.is_string()) {
        return Some("`prompt` is not one string".into());
    }
    match body.get("response_format").map(|f| &f["type"]) {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "text" => {}
        Some(_) => return Some("the request constrains `response_format`".into()),
    }
    None
}

/// Adds a continuation's answer so far to the upstream body: appended to a completion's
/// prompt, or a chat's last `assistant` message (continued, per `how`).
fn continue_body(
    body: &mut Value,
    chat: bool,
    cont: &Continuation,
    how: ChatContinuation,
) -> Result<(), GenError> {
    let text = cont.text.as_str();
    let refuse = |why: String| {
        failed(
            ErrorCode::BAD_REQUEST,
            format!("cannot continue this answer faithfully: {why}"),
        )
    };
    if let Some(why) = not_resumable(body) {
        return Err(refuse(why));
    }
    // A body's own limits count the whole answer: what remains is the limit minus the
    // tokens already delivered.
    for field in ["max_tokens", "max_completion_tokens"] {
        if let Some(n) = body.get(field).and_then(Value::as_u64) {
            body[field] = n.saturating_sub(cont.offset).into();
        }
    }
    if !chat {
        return match body.get_mut("prompt") {
            Some(Value::String(p)) => {
                p.push_str(text);
                Ok(())
            }
            _ => Err(refuse("`prompt` is not one string".into())),
        };
    }
    if how == ChatContinuation::Off {
        return Err(refuse(
            "this worker's server cannot continue a chat message".into(),
        ));
    }
    let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else {
        return Err(refuse("`messages` is not an array".into()));
    };
    messages.push(json!({ "role": "assistant", "content": text }));
    if how == ChatContinuation::ContinueFinalMessage {
        body["continue_final_message"] = true.into();
        body["add_generation_prompt"] = false.into();
    }
    Ok(())
}

/// What the SSE stream told us so far.
#[derive(Debug)]
struct SseState {
    done: bool,
    finish: FinishReason,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

impl Default for SseState {
    fn default() -> Self {
        SseState {
            done: false,
            finish: FinishReason::Stop,
            prompt_tokens: None,
            completion_tokens: None,
        }
    }
}

impl SseState {
    /// Parses one SSE event; returns the text it carries.
    fn event(&mut self, event: &[u8]) -> Result<Vec<String>, GenError> {
        let mut out = Vec::new();
        for line in event.split(|b| *b == b'\n') {
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let data = data.strip_prefix(b" ").unwrap_or(data);
            if data == b"[DONE]" {
                self.done = true;
                continue;
            }
            let v: Value = serde_json::from_slice(data).map_err(|e| {
                failed(
                    ErrorCode::UPSTREAM_FAILED,
                    format!("backend sent a malformed chunk: {e}"),
                )
            })?;
            if let Some(msg) = v["error"]["message"].as_str() {
                return Err(failed(
                    ErrorCode::UPSTREAM_FAILED,
                    format!("backend error: {msg}"),
                ));
            }
            let choice = &v["choices"][0];
            let text = choice["delta"]["content"]
                .as_str()
                .or(choice["text"].as_str())
                .unwrap_or("");
            if !text.is_empty() {
                out.push(text.to_owned());
            }
            match choice["finish_reason"].as_str() {
                Some("length") => self.finish = FinishReason::Length,
                Some(_) => self.finish = FinishReason::Stop,
                None => {}
            }
            if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                self.prompt_tokens = u["prompt_tokens"].as_u64();
                self.completion_tokens = u["completion_tokens"].as_u64();
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chat_and_completion_chunks() {
        let mut s = SseState::default();
        let chat =
            br#"data: {"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#;
        assert_eq!(s.event(chat).unwrap(), ["Hel"]);
        let fin = br#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#;
        assert!(s.event(fin).unwrap().is_empty());
        let usage = br#"data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        s.event(usage).unwrap();
        s.event(b"data: [DONE]").unwrap();
        assert!(s.done);
        assert_eq!(
            (s.finish, s.prompt_tokens, s.completion_tokens),
            (FinishReason::Length, Some(3), Some(1))
        );
        let text = br#"data: {"choices":[{"index":0,"text":"lo","finish_reason":null}]}"#;
        assert_eq!(SseState::default().event(text).unwrap(), ["lo"]);
        assert!(SseState::default().event(b"data: {nope").is_err());
        assert!(SseState::default()
            .event(br#"data: {"error":{"message":"boom"}}"#)
            .is_err());
    }

    #[test]
    fn headers_max_tokens_caps_the_bodys_limits() {
        let client = OpenAiClient::new(OpenAiBackend {
            authority: "127.0.0.1:9".into(),
            path_prefix: "/v1".into(),
            api_key: None,
            model_map: Default::default(),
            timeout: std::time::Duration::from_secs(1),
            chat_continuation: Default::default(),
        });
        let mut h = RequestHeaders::new("m");
        h.body_format = Some(body_format::OPENAI_CHAT);
        h.max_tokens = Some(64);
        let body = |raw: &str| {
            let (_, b) = client
                .upstream_request(&h, raw.as_bytes(), None)
                .unwrap()
                .unwrap();
            serde_json::from_slice::<Value>(&b).unwrap()
        };
        let v = body(r#"{"messages":[],"max_tokens":100000,"max_completion_tokens":8}"#);
        assert_eq!(
            (
                v["max_tokens"].as_u64(),
                v["max_completion_tokens"].as_u64()
            ),
            (Some(64), Some(8))
        );
        let v = body(r#"{"messages":[]}"#);
        assert_eq!(v["max_tokens"].as_u64(), Some(64));
        let v = body(r#"{"messages":[],"max_completion_tokens":"lots"}"#);
        assert_eq!(v["max_completion_tokens"].as_u64(), Some(64));
        let v = body(r#"{"messages":[],"n":64,"best_of":64}"#);
        assert_eq!((v["n"].as_u64(), v.get("best_of")), (Some(1), None));
    }

    #[test]
    fn continuations_append_the_answer_so_far_or_refuse() {
        let client = |how| {
            OpenAiClient::new(OpenAiBackend {
                authority: "127.0.0.1:9".into(),
                path_prefix: "/v1".into(),
                api_key: None,
                model_map: Default::default(),
                timeout: std::time::Duration::from_secs(1),
                chat_continuation: how,
            })
        };
        let cont = Continuation {
            offset: 2,
            text: "Hello wor".into(),
        };
        let mut h = RequestHeaders::new("m");
        let body = |c: &OpenAiClient, h: &RequestHeaders, raw: &str| {
            c.upstream_request(h, raw.as_bytes(), Some(&cont))
                .map(|r| serde_json::from_slice::<Value>(&r.expect("tokens left").1).unwrap())
        };
        let vllm = client(ChatContinuation::ContinueFinalMessage);
        // Plain prompt: a chat whose last message is the partial answer, continued.
        let v = body(&vllm, &h, "say hi").unwrap();
        assert_eq!(
            v["messages"][1],
            json!({"role": "assistant", "content": "Hello wor"})
        );
        assert_eq!(
            (
                v["continue_final_message"].as_bool(),
                v["add_generation_prompt"].as_bool()
            ),
            (Some(true), Some(false))
        );
        h.body_format = Some(body_format::OPENAI_CHAT);
        let v = body(
            &client(ChatContinuation::Prefill),
            &h,
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(v["messages"][1]["content"], "Hello wor");
        assert!(v.get("continue_final_message").is_none());
        for raw in [
            r#"{"messages":[],"tools":[{"type":"function"}]}"#,
            r#"{"messages":[],"n":2}"#,
            r#"{"messages":[],"logprobs":true}"#,
            r#"{"messages":[],"response_format":{"type":"json_object"}}"#,
            r#"{"messages":[],"guided_json":{}}"#,
        ] {
            let Err(GenError::Failed(e)) = body(&vllm, &h, raw) else {
                panic!("{raw} continued")
            };
            assert_eq!(e.code, ErrorCode::BAD_REQUEST, "{raw}");
        }
        assert!(body(&client(ChatContinuation::Off), &h, r#"{"messages":[]}"#).is_err());
        assert!(body(
            &vllm,
            &h,
            r#"{"messages":[],"tool_choice":"none","n":1,"response_format":{"type":"text"}}"#
        )
        .is_ok());
        // A completion: the prompt grows by the answer so far.
        h.body_format = Some(body_format::OPENAI_COMPLETIONS);
        let v = body(&vllm, &h, r#"{"prompt":"Say: "}"#).unwrap();
        assert_eq!(v["prompt"], "Say: Hello wor");
        assert!(body(&vllm, &h, r#"{"prompt":["a","b"]}"#).is_err());
        assert!(body(&vllm, &h, r#"{"prompt":"p","echo":true}"#).is_err());
        // A body's limit counts the whole answer; none left: no upstream request at all.
        let v = body(
            &vllm,
            &h,
            r#"{"prompt":"p","max_tokens":10,"max_completion_tokens":5}"#,
        )
        .unwrap();
        assert_eq!(
            (
                v["max_tokens"].as_u64(),
                v["max_completion_tokens"].as_u64()
            ),
            (Some(8), Some(3))
        );
        let done = vllm.upstream_request(&h, br#"{"prompt":"p","max_tokens":2}"#, Some(&cont));
        assert!(matches!(done, Ok(None)));
    }

    #[test]
    fn statuses_map_to_wire_codes() {
        assert_eq!(code_of(404), ErrorCode::MODEL_NOT_FOUND);
        assert_eq!(code_of(429), ErrorCode::RATE_LIMITED);
        assert_eq!(code_of(401), ErrorCode::UNAUTHORIZED);
        assert_eq!(code_of(500), ErrorCode::UPSTREAM_FAILED);
        assert_eq!(code_of(503), ErrorCode::OVERLOADED);
    }
}
