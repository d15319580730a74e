//! Cross-crate integration tests: real quinn endpoints on loopback, real TLS, real
//! processes for the multi-node tests. No mock transport. One test binary; modules by
//! concern. Timeouts here only bound a hung test (or, where an issue states a bound, check
//! that bound generously); no test asserts on performance.

#[cfg(test)]
mod bench_procs;
#[cfg(test)]
mod support;

#[cfg(test)]
mod cancel;
#[cfg(test)]
mod demo_rules;
#[cfg(test)]
mod discovery;
#[cfg(test)]
mod drain;
#[cfg(test)]
mod ejection;
#[cfg(test)]
mod failure;
#[cfg(test)]
mod fleet;
#[cfg(test)]
mod goaway_race;
#[cfg(test)]
mod handshake;
#[cfg(test)]
mod k8s_discovery;
#[cfg(test)]
mod malformed;
#[cfg(test)]
mod mtls;
#[cfg(test)]
mod openai_backend;
#[cfg(test)]
mod process;
#[cfg(test)]
mod quic_lb;
#[cfg(test)]
mod reload;
#[cfg(test)]
mod reload_proc;
#[cfg(test)]
mod request_errors;
#[cfg(test)]
mod resume;
#[cfg(test)]
mod stall;
#[cfg(test)]
mod traces;
#[cfg(test)]
mod wan;
