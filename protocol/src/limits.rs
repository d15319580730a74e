//! Hard limits of protocol v1 (PROTOCOL.md §7). Exceeding one is a `TOO_LARGE` error.

/// Largest payload of any single frame.
pub const MAX_FRAME_PAYLOAD: usize = 64 * 1024;
/// Largest HEADERS payload.
pub const MAX_HEADERS_LEN: usize = 8 * 1024;
/// Default largest total prompt (sum of BODY payloads) a server accepts.
pub const DEFAULT_MAX_PROMPT_BYTES: usize = 1024 * 1024;
/// Largest `model` header field.
pub const MAX_MODEL_LEN: usize = 128;
/// Largest `tenant`, `residency`, region and worker name.
pub const MAX_NAME_LEN: usize = 64;
/// Largest `area` header field.
pub const MAX_AREA_LEN: usize = 16;
/// Largest `shard_key` header field.
pub const MAX_SHARD_KEY_LEN: usize = 256;
/// Largest `trace_context` header field.
pub const MAX_TRACE_CONTEXT_LEN: usize = 512;
/// Largest `credential` header field (an API key or a signed token).
pub const MAX_CREDENTIAL_LEN: usize = 2048;
/// Largest ERROR message.
pub const MAX_ERROR_MESSAGE_LEN: usize = 1024;
/// Largest `priority` value.
pub const MAX_PRIORITY: u64 = 7;
/// Largest frame header: two 8-byte varints.
pub const MAX_FRAME_HEADER_LEN: usize = 16;
