//! The OpenAI wire shapes the front door speaks: what it reads from a request (only what
//! routing needs), SSE chunks and whole responses it writes, and errors with their HTTP
//! status.

use hyper::StatusCode;
use meridian_protocol::{ErrorCode, FinishReason};
use serde::Deserialize;
use serde_json::{json, Value};

/// The only request fields the edge reads; everything else stays in the forwarded body.
#[derive(Debug, Deserialize)]
pub struct Peek {
    pub model: String,
    /// `null` reads as absent, as OpenAI's API does.
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Chat completions or legacy completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completions,
}

/// One response's identity, shared by all its chunks.
#[derive(Clone, Debug)]
pub struct Meta {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Meta {
    fn object(&self, stream: bool) -> &'static str {
        match (self.kind, stream) {
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Completions, _) => "text_completion",
        }
    }

    fn envelope(&self, choices: Value) -> Value {
        json!({ "id": self.id, "object": self.object(true), "created": self.created, "model": self.model, "choices": choices })
    }

    fn choice(&self, text: Option<&str>, finish: Option<&str>, role: bool) -> Value {
        match self.kind {
            Kind::Chat => {
                let mut delta = json!({});
                if role {
                    delta["role"] = "assistant".into();
                }
                if let Some(t) = text {
                    delta["content"] = t.into();
                }
                json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish })
            }
            Kind::Completions => {
                json!({ "index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish })
            }
        }
    }

    /// The first SSE event (chat: the assistant role with empty content).
    pub fn sse_start(&self) -> Option<String> {
        (self.kind == Kind::Chat)
            .then(|| sse(&self.envelope(json!([self.choice(Some(""), None, true)]))))
    }

    /// The closing SSE events: the finish reason, the usage chunk if asked for, `[DONE]`.
    pub fn sse_end(&self, finish: FinishReason, usage: Option<Value>) -> String {
        let mut out = sse(&self.envelope(json!([self.choice(None, Some(finish.as_str()), false)])));
        if let Some(u) = usage {
            let mut v = self.envelope(json!([]));
            v["usage"] = u;
            out += &sse(&v);
        }
        out + "data: [DONE]\n\n"
    }

    /// A whole (non-streaming) response.
    pub fn whole(&self, text: &str, finish: FinishReason, usage: Value) -> Value {
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "logprobs": null,
                "finish_reason": finish.as_str(),
            }),
            Kind::Completions => {
                json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": finish.as_str() })
            }
        };
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage,
        })
    }
}

/// The constant parts of a response's text chunks, rendered once: per token only the text
/// is JSON-escaped and spliced in (no `Value` tree, one allocation).
#[derive(Clone, Debug)]
pub struct TextChunk {
    prefix: String,
    suffix: String,
}

impl TextChunk {
    /// Renders the parts for `meta`'s response.
    pub fn new(meta: &Meta) -> Self {
        const MARK: &str = "\u{1}MERIDIAN-TEXT\u{1}";
        let whole = sse(&meta.envelope(json!([meta.choice(Some(MARK), None, false)])));
        let quoted = Value::from(MARK).to_string();
        let (prefix, suffix) = whole
            .split_once(&quoted)
            .expect("the marker is in the rendered chunk");
        TextChunk {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        }
    }

    /// The SSE event for `text`.
    pub fn render(&self, text: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + self.suffix.len() + text.len() + 8);
        out.push_str(&self.prefix);
        escape_into(&mut out, text);
        out.push_str(&self.suffix);
        out
    }
}

/// Appends `s` as a JSON string literal.
fn escape_into(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// OpenAI's `usage` object.
pub fn usage(prompt: u64, completion: u64) -> Value {
    json!({ "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt.saturating_add(completion) })
}

/// The HTTP status, OpenAI error `type` and `code` for a wire error code.
pub fn status_of(code: ErrorCode) -> (StatusCode, &'static str) {
    match code {
        ErrorCode::BAD_REQUEST | ErrorCode::PROTOCOL_ERROR => {
            (StatusCode::BAD_REQUEST, "invalid_request_error")
        }
        ErrorCode::UNAUTHORIZED => (StatusCode::UNAUTHORIZED, "authentication_error"),
        ErrorCode::MODEL_NOT_FOUND => (StatusCode::NOT_FOUND, "invalid_request_error"),
        ErrorCode::RATE_LIMITED => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
        ErrorCode::TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error"),
        ErrorCode::OVERLOADED | ErrorCode::RESIDENCY_UNAVAILABLE | ErrorCode::UNAVAILABLE => {
            (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable_error")
        }
        ErrorCode::DEADLINE_EXCEEDED => (StatusCode::GATEWAY_TIMEOUT, "timeout_error"),
        ErrorCode::UPSTREAM_FAILED => (StatusCode::BAD_GATEWAY, "upstream_error"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
    }
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`; `code` is the
/// Meridian wire code name, lowercased (`residency_unavailable`).
pub fn error_body(code: ErrorCode, message: &str) -> Value {
    let (_, kind) = status_of(code);
    json!({ "error": { "message": message, "type": kind, "param": null, "code": code.to_string().to_lowercase() } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_reads_only_routing_fields_and_null_as_absent() {
        let p: Peek = serde_json::from_str(
            r#"{"model":"m","stream":null,"messages":[{"role":"user","content":"x"}],"temperature":0.2}"#,
        )
        .unwrap();
        assert_eq!((p.model.as_str(), p.stream), ("m", None));
        let p: Peek =
            serde_json::from_str(r#"{"model":"m","stream":true,"max_tokens":5}"#).unwrap();
        assert_eq!((p.stream, p.max_tokens), (Some(true), Some(5)));
        assert!(serde_json::from_str::<Peek>(r#"{"stream":true}"#).is_err());
    }

    #[test]
    fn every_wire_code_has_a_status() {
        let expect = [
            (ErrorCode::BAD_REQUEST, 400),
            (ErrorCode::UNAUTHORIZED, 401),
            (ErrorCode::MODEL_NOT_FOUND, 404),
            (ErrorCode::TOO_LARGE, 413),
            (ErrorCode::RATE_LIMITED, 429),
            (ErrorCode::OVERLOADED, 503),
            (ErrorCode::RESIDENCY_UNAVAILABLE, 503),
            (ErrorCode::UNAVAILABLE, 503),
            (ErrorCode::DEADLINE_EXCEEDED, 504),
            (ErrorCode::UPSTREAM_FAILED, 502),
            (ErrorCode::INTERNAL, 500),
            (ErrorCode::PROTOCOL_ERROR, 400),
            (ErrorCode::CANCELLED, 500),
        ];
        for (code, status) in expect {
            assert_eq!(status_of(code).0.as_u16(), status, "{code}");
        }
        for code in ErrorCode::ALL {
            let body = error_body(*code, "m");
            assert!(body["error"]["type"].is_string() && body["error"]["code"].is_string());
        }
    }

    #[test]
    fn fast_text_chunks_equal_the_generic_rendering() {
        for kind in [Kind::Chat, Kind::Completions] {
            let m = Meta {
                kind,
                id: "x-1".into(),
                created: 9,
                model: "m\"q".into(),
            };
            let fast = TextChunk::new(&m);
            for text in ["plain ", "quote \" back \\ nl \n tab \t bell \u{7} é 日本"] {
                let generic = sse(&m.envelope(json!([m.choice(Some(text), None, false)])));
                assert_eq!(fast.render(text), generic, "{kind:?} {text:?}");
            }
        }
    }

    #[test]
    fn chunks_have_the_openai_shape() {
        let m = Meta {
            kind: Kind::Chat,
            id: "chatcmpl-1".into(),
            created: 7,
            model: "m".into(),
        };
        let first: Value =
            serde_json::from_str(m.sse_start().unwrap().trim_start_matches("data: ").trim())
                .unwrap();
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        let t: Value = serde_json::from_str(
            TextChunk::new(&m)
                .render("hé \"x\"")
                .trim_start_matches("data: ")
                .trim(),
        )
        .unwrap();
        assert_eq!(t["object"], "chat.completion.chunk");
        assert_eq!(t["choices"][0]["delta"]["content"], "hé \"x\"");
        let end = m.sse_end(FinishReason::Length, Some(usage(3, 2)));
        assert!(end.ends_with("data: [DONE]\n\n"));
        assert!(end.contains("\"finish_reason\":\"length\"") && end.contains("\"total_tokens\":5"));
    }
}
