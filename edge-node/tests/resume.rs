//! Resumable streams across real processes (PROTOCOL.md §4.10): three `meridian worker`
//! processes and a `meridian edge`; the worker serving a stream is SIGKILLed mid-answer and
//! the client's whole text still equals an unbroken run's — on the native protocol, and
//! through the OpenAI front door over HTTP/1.1 and HTTP/3 (same `id`, one `[DONE]`, `usage`
//! counting every token received).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

mod common;

use bytes::{Buf, Bytes};
use meridian_protocol::client::{Client, ClientConfig, Event, Request, Trust};

/// Tokens per answer and the synthetic backend's gap between them.
const TOKENS: u64 = 60;
const ITL_MS: u64 = 15;

struct Fleet {
    workers: Vec<(String, Child)>,
    edge: Child,
    addr: String,
    http: String,
    admin: String,
    cert: String,
    dir: std::path::PathBuf,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, c) in &mut self.workers {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.edge.kill();
        let _ = self.edge.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fleet {
    /// Continuations the edge dispatched (`meridian_resumes_total{result="resumed"}`).
    fn resumed(&self) -> u64 {
        let mut tcp = TcpStream::connect(&self.admin).unwrap();
        write!(
            tcp,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut m = String::new();
        tcp.read_to_string(&mut m).unwrap();
        m.lines()
            .find_map(|l| l.strip_prefix("meridian_resumes_total{result=\"resumed\"} "))
            .unwrap()
            .parse()
            .unwrap()
    }

    /// SIGKILLs the worker process called `name`.
    fn kill(&mut self, name: &str) {
        let (_, child) = (self.workers.iter_mut())
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no worker {name}"));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

fn json_line(child: &mut Child) -> serde_json::Value {
    let out = child.stdout.as_mut().unwrap();
    // One byte at a time: the rest of stdout stays unread in the pipe (no buffered loss).
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    serde_json::from_slice(&line)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&line)))
}

fn start(name: &str) -> Fleet {
    let dir = std::env::temp_dir().join(format!("meridian-resume-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = env!("CARGO_BIN_EXE_meridian");
    let mut workers = Vec::new();
    let mut entries = String::new();
    for w in ["w0", "w1", "w2"] {
        let cfg = dir.join(format!("{w}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[worker]\nname = \"{w}\"\nregion = \"r\"\nlisten = \"127.0.0.1:0\"\nmodels = [\"m\"]\n\n\
                 [tls]\ndev_cert_dir = \"{w}-cert\"\n\n[backend]\nkind = \"synthetic\"\nttft_ms = 5\nitl_ms = {ITL_MS}\nmax_tokens = {TOKENS}\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(bin)
            .args(["worker", "--json", "--config", cfg.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let line = json_line(&mut child);
        entries += &format!(
            "\n[[worker]]\nname = \"{w}\"\nregion = \"r\"\naddress = \"{}\"\nmodels = [\"m\"]\npin = \"{}\"\n",
            line["addr"].as_str().unwrap(),
            line["cert"].as_str().unwrap()
        );
        workers.push((w.to_owned(), child));
    }
    // A SIGKILLed process sends nothing more: the stall limit notices first.
    let cfg = dir.join("edge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[edge]\nlisten = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nupstream_stall_timeout_ms = 400\n\
             http_resumable_models = [\"m\"]\n\n[tls]\ndev_cert_dir = \"edge-cert\"\n\n\
             [upstream]\nidle_timeout_ms = 1000\n\n[[region]]\nname = \"r\"\n{entries}\n[auth]\nrequired = false\n"
        ),
    )
    .unwrap();
    let mut edge = Command::new(bin)
        .args(["edge", "--json", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = json_line(&mut edge);
    assert_eq!(json_line(&mut edge)["ready"], true);
    Fleet {
        workers,
        edge,
        addr: started["edge_addr"].as_str().unwrap().to_owned(),
        http: started["http_url"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://")
            .to_owned(),
        admin: started["admin_url"]
            .as_str()
            .unwrap()
            .trim_start_matches("http://")
            .to_owned(),
        cert: started["cert"].as_str().unwrap().to_owned(),
        dir,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn native_stream_survives_a_sigkilled_worker() {
    let mut fleet = start("native");
    let rt = rt();
    let trust = Trust::pin_file(&fleet.cert).unwrap();
    let addr = fleet.addr.parse().unwrap();
    let client = rt
        .block_on(Client::connect(addr, ClientConfig::new(trust)))
        .unwrap();
    let ask = || Request::new("m", "tell me about resumable streams").resumable();
    let (_, want, _) = rt
        .block_on(async { client.generate(ask()).await.unwrap().collect().await })
        .unwrap();
    let mut g = rt.block_on(client.generate(ask())).unwrap();
    let mut text = String::new();
    let mut routes = Vec::new();
    let mut killed = false;
    let end = loop {
        match rt.block_on(g.next()).unwrap() {
            Some(Event::Routed(r)) => routes.push(r),
            Some(Event::Tokens(t)) => {
                text += &t;
                if !killed && text.split(' ').count() > 10 {
                    fleet.kill(&routes[0].worker.clone());
                    killed = true;
                }
            }
            Some(Event::End(e)) => break e,
            None => panic!("no END"),
        }
    };
    assert_eq!(text, want, "the resumed answer equals the unbroken one");
    assert_eq!(end.completion_tokens, TOKENS);
    assert_eq!(routes.len(), 2, "{routes:?}");
    assert_ne!(routes[1].worker, routes[0].worker);
    assert!(
        routes[1].resumed_at.is_some_and(|at| at >= 10),
        "{routes:?}"
    );
    rt.block_on(client.close());
}

/// Pulls an SSE stream's `data:` payloads apart: (text, ids, `[DONE]` count, usage's
/// completion tokens).
fn sse(body: &str) -> (String, Vec<String>, usize, Option<u64>) {
    let mut text = String::new();
    let (mut ids, mut done, mut usage) = (Vec::new(), 0, None);
    for data in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            done += 1;
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"));
        assert!(v.get("error").is_none(), "stream failed: {v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text += t;
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            usage = Some(n);
        }
    }
    (text, ids, done, usage)
}

const BODY: &str = r#"{"model":"m","messages":[{"role":"user","content":"resume me"}],"stream":true,"stream_options":{"include_usage":true}}"#;

/// One streaming chat completion over HTTP/1.1; `during(worker)` runs once ten SSE events
/// arrived. Returns (response head, body).
fn http1(fleet: &mut Fleet, during: impl FnOnce(&mut Fleet, &str)) -> (String, String) {
    let mut tcp = TcpStream::connect(&fleet.http).unwrap();
    write!(
        tcp,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    )
    .unwrap();
    let mut r = BufReader::new(tcp);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head += &line.to_lowercase();
    }
    let worker = head
        .lines()
        .find_map(|l| l.strip_prefix("x-meridian-worker: "))
        .unwrap()
        .trim()
        .to_owned();
    let mut body = String::new();
    let mut during = Some(during);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        body += &line;
        if body.matches("data: ").count() == 10 {
            if let Some(f) = during.take() {
                f(fleet, &worker);
            }
        }
    }
    (head, body)
}

#[test]
fn http1_stream_survives_a_sigkilled_worker() {
    let mut fleet = start("http1");
    let (_, unbroken) = http1(&mut fleet, |_, _| {});
    let (want, _, _, _) = sse(&unbroken);
    let (head, body) = http1(&mut fleet, |f, w| f.kill(w));
    assert!(head.contains("x-meridian-resumable: true"), "{head}");
    let (text, ids, done, usage) = sse(&body);
    assert_eq!(text, want, "the resumed answer equals the unbroken one");
    assert_eq!(done, 1, "one [DONE]");
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "one id throughout");
    assert_eq!(usage, Some(TOKENS), "usage counts every token received");
    assert_eq!(fleet.resumed(), 1);
}

/// One streaming chat completion over HTTP/3; `during(worker)` runs once ten SSE events
/// arrived. Returns the body.
async fn h3(fleet: &mut Fleet, during: impl FnOnce(&mut Fleet, &str)) -> String {
    let mut send = common::h3_connect(&fleet.addr, &fleet.cert).await;
    let req = hyper::Request::post("https://localhost/v1/chat/completions")
        .header("content-type", "application/json")
        .header("x-meridian-resumable", "true")
        .body(())
        .unwrap();
    let mut stream = send.send_request(req).await.unwrap();
    stream
        .send_data(Bytes::from_static(BODY.as_bytes()))
        .await
        .unwrap();
    stream.finish().await.unwrap();
    let resp = stream.recv_response().await.unwrap();
    let worker = resp.headers()["x-meridian-worker"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(resp.headers()["x-meridian-resumable"], "true");
    let mut body = String::new();
    let mut during = Some(during);
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        let bytes = chunk.copy_to_bytes(chunk.remaining());
        body += std::str::from_utf8(&bytes).unwrap();
        if body.matches("data: ").count() >= 10 {
            if let Some(f) = during.take() {
                f(fleet, &worker);
            }
        }
    }
    body
}

#[test]
fn http3_stream_survives_a_sigkilled_worker() {
    let mut fleet = start("http3");
    let rt = rt();
    let (want, _, _, _) = sse(&rt.block_on(h3(&mut fleet, |_, _| {})));
    let body = rt.block_on(h3(&mut fleet, |f, w| f.kill(w)));
    let (text, ids, done, usage) = sse(&body);
    assert_eq!(text, want, "the resumed answer equals the unbroken one");
    assert_eq!(done, 1, "one [DONE]");
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "one id throughout");
    assert_eq!(usage, Some(TOKENS));
    assert_eq!(fleet.resumed(), 1);
}
