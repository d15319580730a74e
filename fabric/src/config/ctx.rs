//! Validation context: collects every problem in one config file with its `file:line:col`,
//! and the checks shared by edge and worker configs.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::raw::RawTls;
use super::*;

/// Collects errors with locations in one source file.
pub(super) struct Ctx<'a> {
    src: &'a str,
    file: &'a Path,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(src: &'a str, file: &'a Path) -> Self {
        Ctx {
            src,
            file,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Something that does not stop the config from running but will not work as is yet.
    pub(super) fn warn(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.err(span, message);
        let w = self.errors.pop().expect("just pushed");
        self.warnings.push(w);
    }

    /// The warnings so far.
    pub(super) fn take_warnings(&mut self) -> Vec<ConfigError> {
        std::mem::take(&mut self.warnings)
    }

    pub(super) fn err(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let (line, col) = match span {
            Some(s) => {
                let before = &self.src[..s.start.min(self.src.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                (line, col)
            }
            None => (0, 0),
        };
        self.errors.push(ConfigError {
            file: self.file.into(),
            line,
            col,
            message: message.into(),
        });
    }

    /// The errors so far (for a file that did not even parse).
    pub(super) fn into_errors(self) -> ConfigErrors {
        ConfigErrors(self.errors)
    }

    pub(super) fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }

    pub(super) fn parse<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        match toml::from_str::<T>(self.src) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(e.span(), e.message().trim().to_string());
                None
            }
        }
    }

    pub(super) fn addr(&mut self, v: Option<&Spanned<String>>, default: &str) -> SocketAddr {
        match v {
            None => default.parse().expect("default addresses are valid"),
            Some(s) => s.get_ref().parse().unwrap_or_else(|_| {
                self.err(
                    Some(s.span()),
                    format!(
                        "`{}` is not a socket address like 127.0.0.1:4433",
                        s.get_ref()
                    ),
                );
                default.parse().expect("default addresses are valid")
            }),
        }
    }

    pub(super) fn count(
        &mut self,
        v: Option<&Spanned<u64>>,
        what: &str,
        range: Range<u64>,
        default: u64,
    ) -> u64 {
        match v {
            None => default,
            Some(s) if range.contains(s.get_ref()) => *s.get_ref(),
            Some(s) => {
                self.err(
                    Some(s.span()),
                    format!(
                        "{what} must be in {}..{}, got {}",
                        range.start,
                        range.end,
                        s.get_ref()
                    ),
                );
                default
            }
        }
    }

    /// A number in `range` (which also refuses NaN and infinities).
    pub(super) fn float(
        &mut self,
        v: Option<&Spanned<f64>>,
        what: &str,
        range: std::ops::RangeInclusive<f64>,
        default: f64,
    ) -> f64 {
        match v {
            None => default,
            Some(f) if range.contains(f.get_ref()) => *f.get_ref(),
            Some(f) => {
                self.err(
                    Some(f.span()),
                    format!(
                        "{what} must be in {:?}..={:?}, got {}",
                        range.start(),
                        range.end(),
                        f.get_ref()
                    ),
                );
                default
            }
        }
    }

    pub(super) fn millis(
        &mut self,
        v: Option<&Spanned<u64>>,
        what: &str,
        max_ms: u64,
        default: Duration,
    ) -> Duration {
        let ms = self.count(v, what, 0..max_ms + 1, default.as_millis() as u64);
        Duration::from_millis(ms)
    }

    /// [`Ctx::millis`] with a floor: a value under `min_ms` is a located error.
    pub(super) fn millis_min(
        &mut self,
        v: Option<&Spanned<u64>>,
        what: &str,
        min_ms: u64,
        max_ms: u64,
        default: Duration,
    ) -> Duration {
        if let Some(s) = v.filter(|s| *s.get_ref() < min_ms) {
            self.err(Some(s.span()), format!("{what} must be at least {min_ms}"));
        }
        self.millis(v, what, max_ms, default)
    }

    /// Splits a plain-HTTP URL into `host:port` and a path without a trailing `/`
    /// (empty for the root).
    pub(super) fn http_url(
        &mut self,
        url: &str,
        span: Option<Range<usize>>,
        what: &str,
        advice: &str,
    ) -> (String, String) {
        let Some(rest) = url.strip_prefix("http://") else {
            self.err(
                span,
                format!("{what} must start with http:// (TLS is not supported yet; {advice})"),
            );
            return (String::new(), String::new());
        };
        let (auth, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if auth.is_empty() {
            self.err(span, format!("{what} has no host"));
        }
        // `host` or `[v6]` without a port: HTTP's default.
        let has_port = auth
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && !port.contains(']'));
        let auth = if has_port || auth.is_empty() {
            auth.to_owned()
        } else {
            format!("{auth}:80")
        };
        let path = format!("/{}", path.trim_end_matches('/'));
        (auth, path.trim_end_matches('/').to_owned())
    }

    pub(super) fn name(&mut self, s: &Spanned<String>, what: &str) {
        let n = s.get_ref();
        let ok = !n.is_empty()
            && n.len() <= meridian_protocol::limits::MAX_NAME_LEN
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !ok {
            self.err(
                Some(s.span()),
                format!("{what} `{n}` must be 1-64 characters of a-z, 0-9, '-', '_' or '.'"),
            );
        }
    }

    pub(super) fn area(&mut self, name: &str, span: Range<usize>) {
        let ok = !name.is_empty()
            && name.len() <= meridian_protocol::limits::MAX_AREA_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            self.err(Some(span), format!("area `{name}` must be lowercase letters, digits or '-' (an ISO country code like `jp`, or a group like `eu`)"));
        }
    }

    /// How `what` (a worker, a discovery source) trusts its workers' certificates: its own
    /// `pin`, else the `[upstream] ca`.
    pub(super) fn trust(
        &mut self,
        pin: Option<&Spanned<String>>,
        ca: Option<&Spanned<String>>,
        what: &str,
        span: Range<usize>,
    ) -> UpstreamTrust {
        match (pin, ca) {
            (Some(pin), _) => {
                let path = self.path(pin);
                if !path.exists() {
                    // Not an error: a development worker writes its certificate when it first
                    // starts, and the edge re-reads the pin on every connection attempt.
                    self.warn(
                        Some(pin.span()),
                        format!(
                            "pin `{}` of {what} does not exist (yet): the edge cannot connect until the worker has written its certificate there",
                            path.display()
                        ),
                    );
                }
                UpstreamTrust::Pin(path)
            }
            (None, Some(ca)) => UpstreamTrust::Ca(self.file(ca, "[upstream] ca")),
            (None, None) => {
                self.err(Some(span), format!("{what} has no way to trust its certificate: set `pin = \"<cert.pem>\"` or [upstream] ca"));
                UpstreamTrust::Pin(PathBuf::new())
            }
        }
    }

    pub(super) fn path(&self, s: &Spanned<String>) -> PathBuf {
        let p = PathBuf::from(s.get_ref());
        match self.file.parent() {
            Some(dir) if p.is_relative() && !dir.as_os_str().is_empty() => dir.join(p),
            _ => p,
        }
    }

    /// A path from the config that must name a readable file now.
    pub(super) fn file(&mut self, s: &Spanned<String>, what: &str) -> PathBuf {
        let p = self.path(s);
        if let Err(e) = std::fs::File::open(&p) {
            self.err(
                Some(s.span()),
                format!("{what} `{}` cannot be read: {e}", p.display()),
            );
        }
        p
    }

    pub(super) fn tls(&mut self, raw: Option<&RawTls>) -> ServerTls {
        let Some(t) = raw else {
            return ServerTls::Dev {
                dir: DEFAULT_DEV_CERT_DIR.into(),
            };
        };
        match (&t.cert, &t.key) {
            (Some(c), Some(k)) => ServerTls::Files {
                cert: self.file(c, "[tls] cert"),
                key: self.file(k, "[tls] key"),
            },
            (Some(s), None) | (None, Some(s)) => {
                self.err(Some(s.span()), "[tls] needs both `cert` and `key`, or neither (then a development certificate is generated)");
                ServerTls::Dev {
                    dir: DEFAULT_DEV_CERT_DIR.into(),
                }
            }
            (None, None) => ServerTls::Dev {
                dir: t
                    .dev_cert_dir
                    .as_ref()
                    .map_or(DEFAULT_DEV_CERT_DIR.into(), |d| self.path(d)),
            },
        }
    }

    pub(super) fn models(
        &mut self,
        v: Option<&Spanned<Vec<String>>>,
        span: Range<usize>,
    ) -> Vec<String> {
        match v {
            Some(m) if !m.get_ref().is_empty() => {
                let bad = m
                    .get_ref()
                    .iter()
                    .find(|n| n.is_empty() || n.len() > meridian_protocol::limits::MAX_MODEL_LEN);
                if let Some(b) = bad {
                    self.err(
                        Some(m.span()),
                        format!("model name `{b}` must be 1-128 bytes"),
                    );
                }
                m.get_ref().clone()
            }
            Some(m) => {
                self.err(Some(m.span()), "`models` must list at least one model");
                Vec::new()
            }
            None => {
                self.err(
                    Some(span),
                    "missing `models`: list the models this worker serves",
                );
                Vec::new()
            }
        }
    }
}
