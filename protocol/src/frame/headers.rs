//! HEADERS: the request's routing metadata (PROTOCOL.md §4.1).
//!
//! The payload is a sequence of fields `id varint, length varint, value`. Integer fields
//! hold exactly one varint filling the value. Unknown ids are skipped; a repeated known id
//! is malformed.

use bytes::{Buf, BufMut, Bytes};

use super::wire::{bytes_len, get_varint, put_bytes, utf8};
use super::DecodeError;
use crate::limits::{
    MAX_AREA_LEN, MAX_CREDENTIAL_LEN, MAX_MODEL_LEN, MAX_NAME_LEN, MAX_PRIORITY, MAX_SHARD_KEY_LEN,
    MAX_TRACE_CONTEXT_LEN,
};
use crate::varint;

const FRAME: &str = "HEADERS";

/// Header field ids (PROTOCOL.md §4.1, table 2).
mod id {
    pub const MODEL: u64 = 0x01;
    pub const TENANT: u64 = 0x02;
    pub const SHARD_KEY: u64 = 0x03;
    pub const RESIDENCY: u64 = 0x04;
    pub const AREA: u64 = 0x05;
    pub const DEADLINE_MS: u64 = 0x06;
    pub const MAX_TOKENS: u64 = 0x07;
    pub const PRIORITY: u64 = 0x08;
    pub const TRACE_CONTEXT: u64 = 0x09;
    pub const BODY_FORMAT: u64 = 0x0a;
    pub const CREDENTIAL: u64 = 0x0b;
    pub const RESUMABLE: u64 = 0x0c;
    pub const RESUME_OFFSET: u64 = 0x0d;
    pub const RESUME_TEXT_LEN: u64 = 0x0e;
}

/// The most bytes a field's value may have, checked from its declared length before its
/// bytes are looked at (PROTOCOL.md §2.2). Integer fields hold one varint (≤ 8 bytes).
fn field_limit(field: u64) -> Option<(&'static str, usize)> {
    Some(match field {
        id::MODEL => ("model", MAX_MODEL_LEN),
        id::TENANT => ("tenant", MAX_NAME_LEN),
        id::SHARD_KEY => ("shard_key", MAX_SHARD_KEY_LEN),
        id::RESIDENCY => ("residency", MAX_NAME_LEN),
        id::AREA => ("area", MAX_AREA_LEN),
        id::TRACE_CONTEXT => ("trace_context", MAX_TRACE_CONTEXT_LEN),
        id::CREDENTIAL => ("credential", MAX_CREDENTIAL_LEN),
        _ => return None,
    })
}

/// A client credential (HEADERS field `credential`, PROTOCOL.md §4.9): an API key or a
/// signed token. Its `Debug` never shows the secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credential(pub String);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential(<{} bytes redacted>)", self.0.len())
    }
}

/// Marks an edge's continuation request to a worker (HEADERS fields `resume_offset` and
/// `resume_text_len`, PROTOCOL.md §4.10): the last `text_len` bytes of the BODY are text
/// already generated and delivered to the client, `offset` TOKENS frames of it. Only an edge
/// sends these; an edge receiving them from a client answers BAD_REQUEST.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResumeFrom {
    /// TOKENS frames the client already received (the token offset).
    pub offset: u64,
    /// Bytes at the end of the BODY that are the already generated text.
    pub text_len: u64,
}

/// What the BODY bytes are (HEADERS field `body_format`, PROTOCOL.md §4.1).
pub mod body_format {
    /// The prompt as plain UTF-8 text (the default).
    pub const PROMPT: u64 = 0;
    /// An OpenAI `/v1/chat/completions` request body (JSON), forwarded unchanged.
    pub const OPENAI_CHAT: u64 = 1;
    /// An OpenAI `/v1/completions` request body (JSON), forwarded unchanged.
    pub const OPENAI_COMPLETIONS: u64 = 2;
}

/// Routing metadata of one request. Only `model` is required.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHeaders {
    /// Model name, 1–128 bytes.
    pub model: String,
    /// Tenant name; its residency policy applies.
    pub tenant: Option<String>,
    /// Explicit shard key (session id); else the server hashes the prompt's first bytes.
    pub shard_key: Option<Bytes>,
    /// Residency policy name; narrows (never widens) the tenant's policy.
    pub residency: Option<String>,
    /// Client area hint: ISO 3166-1 alpha-2 code or a configured group (`eu`), lowercase.
    pub area: Option<String>,
    /// Milliseconds from the server's receipt of HEADERS until the request fails with
    /// DEADLINE_EXCEEDED.
    pub deadline_ms: Option<u64>,
    /// Most tokens to generate.
    pub max_tokens: Option<u64>,
    /// Scheduling priority 0 (default) to 7.
    pub priority: Option<u64>,
    /// W3C `traceparent` value, carried edge → worker so one trace spans both hops.
    pub trace_context: Option<String>,
    /// What the BODY bytes are ([`body_format`]); absent means plain prompt text.
    pub body_format: Option<u64>,
    /// The client's credential (API key or signed token); the edge authenticates it and
    /// never forwards it.
    pub credential: Option<Credential>,
    /// The client asks the edge to continue the answer on another worker if the serving one
    /// fails after TOKENS (PROTOCOL.md §4.10).
    pub resumable: bool,
    /// Set by an edge on a continuation request to a worker (PROTOCOL.md §4.10).
    pub resume: Option<ResumeFrom>,
}

impl RequestHeaders {
    /// Headers for `model` with every optional field absent.
    pub fn new(model: impl Into<String>) -> Self {
        RequestHeaders {
            model: model.into(),
            ..Default::default()
        }
    }

    /// Checks that the headers can be sent: every integer fits a varint (≤ 2^62 − 1,
    /// PROTOCOL.md §2.1), every field is within its limit and the whole HEADERS payload
    /// within 8 KiB. Encoding headers that fail this check panics, so a sender that takes
    /// values from its own caller checks first.
    pub fn check(&self) -> Result<(), DecodeError> {
        for (id, f) in self.fields() {
            match f {
                Field::Int(v) if v > varint::MAX => {
                    return Err(DecodeError::InvalidField {
                        field: field_name(id),
                        reason: "integer above 2^62 - 1",
                    })
                }
                Field::Bytes(b) => {
                    if let Some((name, max)) = field_limit(id) {
                        if b.len() > max {
                            return Err(DecodeError::FieldTooLong {
                                field: name,
                                len: b.len(),
                                max,
                            });
                        }
                    }
                }
                Field::Int(_) => {}
            }
        }
        if self.priority.is_some_and(|p| p > MAX_PRIORITY) {
            return Err(DecodeError::InvalidField {
                field: "priority",
                reason: "must be 0-7",
            });
        }
        let len = self.payload_len();
        if len > crate::limits::MAX_HEADERS_LEN {
            return Err(DecodeError::TooLarge {
                ty: FRAME,
                len: len as u64,
                max: crate::limits::MAX_HEADERS_LEN,
            });
        }
        Ok(())
    }

    pub(super) fn decode_payload(p: &mut Bytes) -> Result<Self, DecodeError> {
        let mut h = RequestHeaders::default();
        let mut seen = 0u32;
        let mut model = None;
        let (mut resume_offset, mut resume_text_len) = (None, None);
        while p.has_remaining() {
            let field = get_varint(p, FRAME)?;
            let len = get_varint(p, FRAME)?;
            // PROTOCOL.md §2.2: the limit first (TOO_LARGE), then the frame's end.
            if let Some((name, max)) = field_limit(field) {
                if len > max as u64 {
                    return Err(DecodeError::FieldTooLong {
                        field: name,
                        len: usize::try_from(len).unwrap_or(usize::MAX),
                        max,
                    });
                }
            }
            if (p.remaining() as u64) < len {
                return Err(DecodeError::Malformed {
                    frame: FRAME,
                    reason: "field runs past the frame",
                });
            }
            let value = p.split_to(len as usize);
            if (1..=31).contains(&field) {
                let bit = 1u32 << field;
                if seen & bit != 0 {
                    return Err(DecodeError::Malformed {
                        frame: FRAME,
                        reason: "repeated field",
                    });
                }
                seen |= bit;
            }
            match field {
                id::MODEL => model = Some(string(value, "model", MAX_MODEL_LEN)?),
                id::TENANT => h.tenant = Some(string(value, "tenant", MAX_NAME_LEN)?),
                id::SHARD_KEY => {
                    check_len(&value, "shard_key", MAX_SHARD_KEY_LEN)?;
                    h.shard_key = Some(value);
                }
                id::RESIDENCY => h.residency = Some(string(value, "residency", MAX_NAME_LEN)?),
                id::AREA => {
                    let area = string(value, "area", MAX_AREA_LEN)?;
                    if area.is_empty()
                        || !area
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    {
                        return Err(DecodeError::InvalidField {
                            field: "area",
                            reason: "must be lowercase letters, digits or '-'",
                        });
                    }
                    h.area = Some(area);
                }
                id::DEADLINE_MS => h.deadline_ms = Some(int(value, "deadline_ms")?),
                id::MAX_TOKENS => h.max_tokens = Some(int(value, "max_tokens")?),
                id::PRIORITY => {
                    let prio = int(value, "priority")?;
                    if prio > MAX_PRIORITY {
                        return Err(DecodeError::InvalidField {
                            field: "priority",
                            reason: "must be 0-7",
                        });
                    }
                    h.priority = Some(prio);
                }
                id::BODY_FORMAT => h.body_format = Some(int(value, "body_format")?),
                id::TRACE_CONTEXT => {
                    h.trace_context = Some(string(value, "trace_context", MAX_TRACE_CONTEXT_LEN)?)
                }
                id::CREDENTIAL => {
                    let c = string(value, "credential", MAX_CREDENTIAL_LEN)?;
                    if c.is_empty() {
                        return Err(DecodeError::InvalidField {
                            field: "credential",
                            reason: "empty",
                        });
                    }
                    h.credential = Some(Credential(c));
                }
                id::RESUMABLE => {
                    h.resumable = match int(value, "resumable")? {
                        0 => false,
                        1 => true,
                        _ => {
                            return Err(DecodeError::InvalidField {
                                field: "resumable",
                                reason: "must be 0 or 1",
                            })
                        }
                    }
                }
                id::RESUME_OFFSET => resume_offset = Some(int(value, "resume_offset")?),
                id::RESUME_TEXT_LEN => resume_text_len = Some(int(value, "resume_text_len")?),
                _ => {} // PROTOCOL.md §4.1: unknown fields are skipped.
            }
        }
        h.resume = match (resume_offset, resume_text_len) {
            (Some(offset), Some(text_len)) => Some(ResumeFrom { offset, text_len }),
            (None, None) => None,
            _ => {
                return Err(DecodeError::InvalidField {
                    field: "resume_offset",
                    reason: "resume_offset and resume_text_len go together",
                })
            }
        };
        h.model = model.ok_or(DecodeError::InvalidField {
            field: "model",
            reason: "missing",
        })?;
        if h.model.is_empty() {
            return Err(DecodeError::InvalidField {
                field: "model",
                reason: "empty",
            });
        }
        Ok(h)
    }

    fn fields(&self) -> impl Iterator<Item = (u64, Field<'_>)> {
        [
            Some((id::MODEL, Field::Bytes(self.model.as_bytes()))),
            self.tenant
                .as_deref()
                .map(|v| (id::TENANT, Field::Bytes(v.as_bytes()))),
            self.shard_key
                .as_deref()
                .map(|v| (id::SHARD_KEY, Field::Bytes(v))),
            self.residency
                .as_deref()
                .map(|v| (id::RESIDENCY, Field::Bytes(v.as_bytes()))),
            self.area
                .as_deref()
                .map(|v| (id::AREA, Field::Bytes(v.as_bytes()))),
            self.deadline_ms.map(|v| (id::DEADLINE_MS, Field::Int(v))),
            self.max_tokens.map(|v| (id::MAX_TOKENS, Field::Int(v))),
            self.priority.map(|v| (id::PRIORITY, Field::Int(v))),
            self.trace_context
                .as_deref()
                .map(|v| (id::TRACE_CONTEXT, Field::Bytes(v.as_bytes()))),
            self.body_format.map(|v| (id::BODY_FORMAT, Field::Int(v))),
            self.credential
                .as_ref()
                .map(|v| (id::CREDENTIAL, Field::Bytes(v.0.as_bytes()))),
            self.resumable.then_some((id::RESUMABLE, Field::Int(1))),
            self.resume
                .map(|r| (id::RESUME_OFFSET, Field::Int(r.offset))),
            self.resume
                .map(|r| (id::RESUME_TEXT_LEN, Field::Int(r.text_len))),
        ]
        .into_iter()
        .flatten()
    }

    pub(super) fn payload_len(&self) -> usize {
        self.fields()
            .map(|(id, f)| {
                varint::size(id)
                    + match f {
                        Field::Bytes(b) => bytes_len(b),
                        Field::Int(v) => 1 + varint::size(v.min(varint::MAX)),
                    }
            })
            .sum()
    }

    pub(super) fn encode_payload<B: BufMut>(&self, buf: &mut B) {
        for (id, f) in self.fields() {
            varint::encode(id, buf);
            match f {
                Field::Bytes(b) => put_bytes(buf, b),
                Field::Int(v) => {
                    varint::encode(varint::size(v) as u64, buf);
                    varint::encode(v, buf);
                }
            }
        }
    }
}

/// What [`rewrite`] changes in a HEADERS frame for the next hop.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rewrite<'a> {
    /// `trace_context` to set.
    pub trace: Option<&'a str>,
    /// `tenant` to set (the authenticated one).
    pub tenant: Option<&'a str>,
    /// `max_tokens` to set (what the edge reserved, or what remains on a resumption).
    pub max_tokens: Option<u64>,
    /// `resume_offset` and `resume_text_len` to set (a continuation request).
    pub resume: Option<ResumeFrom>,
}

/// Rewrites one whole, already validated HEADERS frame (`frame`, header and payload as
/// received) for the next hop: each field `with` names is set, and the `credential` field
/// is always removed. Every other field — unknown ones included — is copied byte for byte in
/// its original order. This is how an edge passes on the authenticated tenant, continues a
/// trace and marks a continuation (PROTOCOL.md §4.8–§4.10) without dropping fields it does
/// not understand, and without handing a client's secret to a worker. `None` when `frame` is
/// not exactly one well-formed HEADERS frame or the result would exceed the limits.
pub fn rewrite(frame: &[u8], with: &Rewrite<'_>) -> Option<Bytes> {
    use super::{encode_header, FrameHead, FrameType};
    let head = FrameHead::peek(frame).ok()?;
    if head.ty != FrameType::HEADERS || head.total_len() != frame.len() {
        return None;
    }
    let (trace, tenant) = (with.trace, with.tenant);
    if trace.is_some_and(|t| t.len() > MAX_TRACE_CONTEXT_LEN)
        || tenant.is_some_and(|t| t.len() > MAX_NAME_LEN)
    {
        return None;
    }
    let mut payload = &frame[head.header_len..];
    let extra = trace.map_or(0, str::len) + tenant.map_or(0, str::len) + 40;
    let mut out = bytes::BytesMut::with_capacity(payload.len() + extra);
    while !payload.is_empty() {
        let (field, n1) = varint::peek(payload)?;
        let (len, n2) = varint::peek(&payload[n1..])?;
        let end = (n1 + n2).checked_add(usize::try_from(len).ok()?)?;
        if end > payload.len() {
            return None;
        }
        let replaced = field == id::CREDENTIAL
            || (field == id::TRACE_CONTEXT && trace.is_some())
            || (field == id::TENANT && tenant.is_some())
            || (field == id::MAX_TOKENS && with.max_tokens.is_some())
            || (matches!(field, id::RESUME_OFFSET | id::RESUME_TEXT_LEN) && with.resume.is_some());
        if !replaced {
            out.put_slice(&payload[..end]);
        }
        payload = &payload[end..];
    }
    for (field, value) in [(id::TENANT, tenant), (id::TRACE_CONTEXT, trace)] {
        if let Some(v) = value {
            varint::encode(field, &mut out);
            put_bytes(&mut out, v.as_bytes());
        }
    }
    let ints = [
        with.max_tokens.map(|m| (id::MAX_TOKENS, m)),
        with.resume.map(|r| (id::RESUME_OFFSET, r.offset)),
        with.resume.map(|r| (id::RESUME_TEXT_LEN, r.text_len)),
    ];
    for (field, v) in ints.into_iter().flatten() {
        let v = v.min(varint::MAX);
        varint::encode(field, &mut out);
        varint::encode(varint::size(v) as u64, &mut out);
        varint::encode(v, &mut out);
    }
    if out.len() > crate::limits::MAX_HEADERS_LEN {
        return None;
    }
    let mut frame = bytes::BytesMut::with_capacity(out.len() + 8);
    encode_header(FrameType::HEADERS, out.len(), &mut frame);
    frame.put_slice(&out);
    Some(frame.freeze())
}

/// [`rewrite`] setting `trace_context` and `tenant` (when given) only.
pub fn for_upstream(frame: &[u8], trace: Option<&str>, tenant: Option<&str>) -> Option<Bytes> {
    rewrite(
        frame,
        &Rewrite {
            trace,
            tenant,
            ..Rewrite::default()
        },
    )
}

/// [`for_upstream`] with only `trace_context` set (the credential is still removed).
pub fn with_trace_context(frame: &[u8], value: &str) -> Option<Bytes> {
    for_upstream(frame, Some(value), None)
}

fn field_name(field: u64) -> &'static str {
    match field {
        id::DEADLINE_MS => "deadline_ms",
        id::MAX_TOKENS => "max_tokens",
        id::PRIORITY => "priority",
        id::BODY_FORMAT => "body_format",
        id::RESUMABLE => "resumable",
        id::RESUME_OFFSET => "resume_offset",
        id::RESUME_TEXT_LEN => "resume_text_len",
        other => field_limit(other).map_or("field", |(n, _)| n),
    }
}

enum Field<'a> {
    Bytes(&'a [u8]),
    Int(u64),
}

fn check_len(value: &Bytes, field: &'static str, max: usize) -> Result<(), DecodeError> {
    if value.len() > max {
        return Err(DecodeError::FieldTooLong {
            field,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

fn string(value: Bytes, field: &'static str, max: usize) -> Result<String, DecodeError> {
    check_len(&value, field, max)?;
    utf8(value, field)
}

fn int(mut value: Bytes, field: &'static str) -> Result<u64, DecodeError> {
    let v = varint::decode(&mut value).map_err(|_| DecodeError::InvalidField {
        field,
        reason: "truncated integer",
    })?;
    if value.has_remaining() {
        return Err(DecodeError::InvalidField {
            field,
            reason: "trailing bytes after integer",
        });
    }
    Ok(v)
}
