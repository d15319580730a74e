//! The OpenAI-compatible HTTP front door of `meridian demo --serve`, as an HTTP client sees
//! it (HTTP/1.1 and HTTP/2 over TCP, HTTP/3 on the edge's UDP port; a real process).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{exchange, serve};

const JSON: (&str, &str) = ("content-type", "application/json");

/// `(path, headers, body, expected status, expected error code)`.
type ErrorCase<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, u16, &'a str);

#[test]
fn streaming_chat_is_exact_openai_sse() {
    let s = serve("1", "5");
    let body = r#"{"model":"llama-3-8b","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    let (status, head, sse) = exchange(
        &s.http,
        "POST",
        "/v1/chat/completions",
        &[JSON, ("x-meridian-area", "jp")],
        body,
    );
    assert_eq!(status, 200, "{sse}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("x-meridian-region: seoul"), "{head}");
    // HTTP/3 is advertised on the edge's UDP port (RFC 9114 §3.1.1).
    let udp_port = s.edge.rsplit_once(':').unwrap().1;
    assert!(
        head.contains(&format!("alt-svc: h3=\":{udp_port}\"; ma=86400")),
        "{head}"
    );
    let events: Vec<&str> = sse.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text.split_whitespace().count(), 5, "{text}");
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 5);
}

#[test]
fn whole_responses_models_and_errors() {
    let s = serve("1", "4");
    let (status, head, body) = exchange(
        &s.http,
        "POST",
        "/v1/chat/completions",
        &[
            JSON,
            ("x-meridian-area", "fr"),
            ("x-meridian-session", "abc"),
        ],
        r#"{"model":"llama-3-8b","messages":[{"role":"user","content":"bonjour"}],"max_tokens":2}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("x-meridian-region: frankfurt"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 2);

    let (status, _, body) = exchange(
        &s.http,
        "POST",
        "/v1/completions",
        &[JSON],
        r#"{"model":"llama-3-8b","prompt":"x"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert!(!v["choices"][0]["text"].as_str().unwrap().is_empty());

    let (status, _, body) = exchange(&s.http, "GET", "/v1/models", &[], "");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["data"][0]["id"],
        "llama-3-8b"
    );

    let cases: [ErrorCase<'_>; 5] = [
        (
            "/v1/chat/completions",
            &[JSON],
            r#"{"model":"gpt-9","messages":[]}"#,
            404,
            "model_not_found",
        ),
        (
            "/v1/chat/completions",
            &[JSON],
            r#"{"messages":[]}"#,
            400,
            "bad_request",
        ),
        (
            "/v1/chat/completions",
            &[JSON],
            "{not json",
            400,
            "bad_request",
        ),
        (
            "/v1/chat/completions",
            &[JSON, ("x-meridian-area", "JAPAN")],
            r#"{"model":"llama-3-8b"}"#,
            400,
            "bad_request",
        ),
        ("/v1/embeddings", &[JSON], "{}", 404, "bad_request"),
    ];
    for (path, headers, body, want, code) in cases {
        let (status, _, resp) = exchange(&s.http, "POST", path, headers, body);
        assert_eq!(status, want, "{path} {body}: {resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        assert_eq!(v["error"]["code"], code, "{resp}");
        assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string());
    }
    // Over the limit by its declared length: answered 413 before the body is sent.
    let mut tcp = TcpStream::connect(&s.http).unwrap();
    write!(
        tcp,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        common::demo_key(),
        (1 << 20) + 20
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = tcp.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Over the limit without a declared length (chunked): 413 once the limit is crossed.
    let mut tcp = TcpStream::connect(&s.http).unwrap();
    write!(
        tcp,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        common::demo_key()
    )
    .unwrap();
    let chunk = format!("10000\r\n{}\r\n", "a".repeat(0x10000));
    let mut answered = String::new();
    for _ in 0..17 {
        if tcp.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    let _ = tcp.read_to_string(&mut answered);
    assert!(answered.starts_with("HTTP/1.1 413"), "{answered}");
}

#[test]
fn client_disconnect_cancels_upstream() {
    // Long generations: 100k tokens at 5 ms each.
    let s = serve("5", "100000");
    let mut tcp = TcpStream::connect(&s.http).unwrap();
    let body =
        r#"{"model":"llama-3-8b","messages":[{"role":"user","content":"go on"}],"stream":true}"#;
    let key = common::demo_key();
    write!(tcp, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut buf = [0u8; 4096];
    let mut seen = String::new();
    while !seen.contains("\"content\":\"") || seen.matches("data: ").count() < 3 {
        let n = tcp.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early: {seen}");
        seen += &String::from_utf8_lossy(&buf[..n]);
    }
    drop(tcp);
    // Observe the edge's own state (its metrics), not a timer: the request is cancelled and
    // no stream stays open. Bounded so a regression fails instead of hanging.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut tcp = TcpStream::connect(&s.admin).unwrap();
        write!(
            tcp,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut m = String::new();
        tcp.read_to_string(&mut m).unwrap();
        if m.contains("meridian_cancelled_total 1\n") && m.contains("meridian_active_streams 0\n") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no cancellation seen:\n{m}"
        );
        std::thread::yield_now();
    }
}

/// Streams one chat completion over HTTP/3 to the edge's UDP port; (status, region, SSE
/// text). `during` runs once the response headers arrived.
async fn h3_stream(s: &common::Serve, during: impl FnOnce()) -> (u16, String, String) {
    h3_stream_as(s, common::demo_key(), during).await
}

/// [`h3_stream`] authenticated with `key`.
async fn h3_stream_as(
    s: &common::Serve,
    key: &str,
    during: impl FnOnce(),
) -> (u16, String, String) {
    use bytes::{Buf, Bytes};
    let mut send = common::h3_connect(&s.edge, &s.cert).await;
    let req = hyper::Request::post("https://localhost/v1/chat/completions")
        .header("content-type", "application/json")
        .header("x-meridian-area", "jp")
        .header("authorization", format!("Bearer {key}"))
        .body(())
        .unwrap();
    let mut stream = send.send_request(req).await.unwrap();
    let body =
        r#"{"model":"llama-3-8b","messages":[{"role":"user","content":"over h3"}],"stream":true}"#;
    stream
        .send_data(Bytes::from_static(body.as_bytes()))
        .await
        .unwrap();
    stream.finish().await.unwrap();
    let resp = stream.recv_response().await.unwrap();
    during();
    let region = (resp.headers().get("x-meridian-region"))
        .map_or_else(String::new, |v| v.to_str().unwrap().to_owned());
    let mut text = String::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        let bytes = chunk.copy_to_bytes(chunk.remaining());
        text += std::str::from_utf8(&bytes).unwrap();
    }
    (resp.status().as_u16(), region, text)
}

#[test]
fn http3_front_door_on_the_edge_udp_port() {
    let s = serve("1", "4");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, region, text) = rt.block_on(h3_stream(&s, || {}));
    assert_eq!((status, region.as_str()), (200, "seoul"));
    assert!(text.contains("chat.completion.chunk"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}

#[test]
fn sigterm_lets_http3_and_http1_streams_finish() {
    // 20 tokens 50 ms apart: the streams are in flight when SIGTERM arrives.
    let mut s = serve("50", "20");
    let pid = s.child.id().to_string();
    let http = s.http.clone();
    let h1 = std::thread::spawn(move || {
        let body =
            r#"{"model":"llama-3-8b","messages":[{"role":"user","content":"h1"}],"stream":true}"#;
        exchange(&http, "POST", "/v1/chat/completions", &[JSON], body)
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = s.admin.clone();
    let (status, _, text) = rt.block_on(h3_stream(&s, || {
        // Both requests are in flight before the signal (else one would get 503).
        while !exchange(&admin, "GET", "/metrics", &[], "")
            .2
            .contains("\nmeridian_active_streams 2\n")
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
    }));
    assert_eq!(status, 200);
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "HTTP/3 stream cut: {text}"
    );
    let (status, _, sse) = h1.join().unwrap();
    assert_eq!(status, 200);
    assert!(
        sse.ends_with("data: [DONE]\n\n"),
        "HTTP/1.1 stream cut: {sse}"
    );
    let exit = s.child.wait().unwrap();
    assert!(exit.success(), "{exit}");
}

#[test]
fn http2_multiplexes_streams_on_one_connection() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let s = serve("1", "4");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Cleartext HTTP/2 with prior knowledge (what `curl --http2-prior-knowledge` does).
        let tcp = tokio::net::TcpStream::connect(&s.http).await.unwrap();
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let post = |area: &'static str, model: &'static str| {
            let mut sender = sender.clone();
            let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"h2 {area}"}}],"stream":true}}"#);
            let req = hyper::Request::post(format!("http://{}/v1/chat/completions", s.http))
                .header("content-type", "application/json")
                .header("x-meridian-area", area)
                .header("authorization", format!("Bearer {}", common::demo_key()))
                .body(Full::new(bytes::Bytes::from(body)))
                .unwrap();
            async move {
                let resp = sender.send_request(req).await.unwrap();
                assert_eq!(resp.version(), hyper::Version::HTTP_2);
                let status = resp.status().as_u16();
                let region = resp
                    .headers()
                    .get("x-meridian-region")
                    .map(|v| v.to_str().unwrap().to_owned());
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                (status, region, String::from_utf8(body.to_vec()).unwrap())
            }
        };
        // Three requests in flight at once on one connection, one of them an error.
        let (jp, fr, unknown) = tokio::join!(
            post("jp", "llama-3-8b"),
            post("fr", "llama-3-8b"),
            post("jp", "no-such-model")
        );
        for ((status, region, sse), want) in [(jp, "seoul"), (fr, "frankfurt")] {
            assert_eq!((status, region.as_deref()), (200, Some(want)), "{sse}");
            assert!(sse.contains("chat.completion.chunk"), "{sse}");
            assert!(sse.ends_with("data: [DONE]\n\n"), "{sse}");
        }
        let (status, _, body) = unknown;
        assert_eq!(status, 404, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found", "{v}");
    });
}

#[test]
fn slow_clients_get_408_or_are_closed_within_the_intake_timeout() {
    let s = common::edge_with(
        "[edge]\nlisten = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nintake_timeout_ms = 300\n\
         [tls]\ndev_cert_dir = \"{dir}/certs\"\n[[region]]\nname = \"r\"\n\
         [[worker]]\nname = \"w\"\nregion = \"r\"\naddress = \"127.0.0.1:9\"\nmodels = [\"m\"]\npin = \"{dir}/certs/cert.pem\"\n[tenants]\nacme = {}\nbund = {}\n{auth}",
    );
    let bound = std::time::Duration::from_secs(20);
    // A body that never completes: 408 with OpenAI's error shape.
    let mut tcp = TcpStream::connect(&s.http).unwrap();
    tcp.set_read_timeout(Some(bound)).unwrap();
    write!(
        tcp,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{\"model\"",
        common::demo_key()
    )
    .unwrap();
    let mut resp = vec![0u8; 4096];
    let n = tcp.read(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp[..n]);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("deadline_exceeded"), "{resp}");
    // A connection that sends nothing: closed (it would otherwise hold a connection slot).
    let mut tcp = TcpStream::connect(&s.http).unwrap();
    tcp.set_read_timeout(Some(bound)).unwrap();
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest)
        .expect("closed by the server, not by our read timeout");
    // Half an HTTP/2 preface, then nothing: closed too.
    let mut tcp = TcpStream::connect(&s.http).unwrap();
    tcp.set_read_timeout(Some(bound)).unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest)
        .expect("closed by the server, not by our read timeout");
    // A request head that never completes: the connection is closed.
    let mut tcp = TcpStream::connect(&s.http).unwrap();
    tcp.set_read_timeout(Some(bound)).unwrap();
    tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost:")
        .unwrap();
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest)
        .expect("closed by the server, not by our read timeout");
}

#[test]
fn tcp_connections_beyond_max_connections_wait_their_turn() {
    let s = common::edge_with(
        "[edge]\nlisten = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nmax_connections = 1\n\
         [tls]\ndev_cert_dir = \"{dir}/certs\"\n[[region]]\nname = \"r\"\n\
         [[worker]]\nname = \"w\"\nregion = \"r\"\naddress = \"127.0.0.1:9\"\nmodels = [\"m\"]\npin = \"{dir}/certs/cert.pem\"\n[tenants]\nacme = {}\nbund = {}\n{auth}",
    );
    let models = format!(
        "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        common::demo_key()
    );
    let models = models.as_bytes();
    let answer = |tcp: &mut TcpStream| {
        let mut buf = vec![0u8; 4096];
        let n = tcp.read(&mut buf)?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    // The one allowed connection, kept alive after its answer.
    let mut first = TcpStream::connect(&s.http).unwrap();
    first.write_all(models).unwrap();
    assert!(answer(&mut first).unwrap().starts_with("HTTP/1.1 200"));
    // A second one is not served while the first is open...
    let mut second = TcpStream::connect(&s.http).unwrap();
    second.write_all(models).unwrap();
    second
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let waiting = answer(&mut second).expect_err("served beyond max_connections");
    assert!(
        matches!(
            waiting.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{waiting}"
    );
    // ...and is served as soon as it closes.
    drop(first);
    second
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    assert!(answer(&mut second).unwrap().starts_with("HTTP/1.1 200"));
}

#[test]
fn request_bytes_beyond_the_edge_budget_get_503_and_come_back() {
    let s = common::edge_with(
        "[edge]\nlisten = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nmax_buffered_bytes = 65536\n\
         [tls]\ndev_cert_dir = \"{dir}/certs\"\n[[region]]\nname = \"r\"\n\
         [[worker]]\nname = \"w\"\nregion = \"r\"\naddress = \"127.0.0.1:9\"\nmodels = [\"m\"]\npin = \"{dir}/certs/cert.pem\"\n[tenants]\nacme = {}\nbund = {}\n{auth}",
    );
    let buffered = || {
        let (_, _, m) = exchange(&s.admin, "GET", "/metrics", &[], "");
        let line = m
            .lines()
            .find(|l| l.starts_with("meridian_buffered_request_bytes "))
            .expect("gauge in /metrics")
            .to_owned();
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    let bound = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // A slow client holds 50 KB of a 100 KB body; wait until the edge holds its bytes.
    let mut slow = TcpStream::connect(&s.http).unwrap();
    write!(
        slow,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\n\r\n",
        common::demo_key()
    )
    .unwrap();
    slow.write_all(&[b' '; 50_000]).unwrap();
    while buffered() < 50_000 {
        assert!(
            std::time::Instant::now() < bound,
            "the edge never read the body"
        );
        std::thread::yield_now();
    }
    // Another 30 KB body no longer fits: 503 `overloaded` at once, with a retry-after.
    let other = " ".repeat(30_000);
    let (status, head, body) = exchange(&s.http, "POST", "/v1/chat/completions", &[JSON], &other);
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "overloaded", "{v}");
    assert!(head.contains("retry-after: 1"), "{head}");
    // The slow client leaves: its bytes are released and the same body is read again (then
    // refused as invalid JSON, which shows it got past the budget).
    drop(slow);
    while buffered() > 0 {
        assert!(
            std::time::Instant::now() < bound,
            "the budget was never released"
        );
        std::thread::yield_now();
    }
    let (status, _, body) = exchange(&s.http, "POST", "/v1/chat/completions", &[JSON], &other);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid request body"), "{body}");
}

#[test]
fn malformed_chunked_bodies_are_400_and_huge_declared_lengths_413_at_once() {
    let s = serve("1", "4");
    let mut tcp = TcpStream::connect(&s.http).unwrap();
    write!(
        tcp,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n",
        common::demo_key()
    )
    .unwrap();
    let mut resp = String::new();
    let _ = tcp.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let mut tcp = TcpStream::connect(&s.http).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        tcp,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 2147483648\r\n\r\n{{",
        common::demo_key()
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = tcp
        .read(&mut buf)
        .expect("answered without waiting for the body");
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
}

#[test]
fn idle_http2_connections_are_closed_and_free_their_slot() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let s = common::edge_with(
        "[edge]\nlisten = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nmax_connections = 1\nintake_timeout_ms = 300\n\
         [tls]\ndev_cert_dir = \"{dir}/certs\"\n[[region]]\nname = \"r\"\n\
         [[worker]]\nname = \"w\"\nregion = \"r\"\naddress = \"127.0.0.1:9\"\nmodels = [\"m\"]\npin = \"{dir}/certs/cert.pem\"\n[tenants]\nacme = {}\nbund = {}\n{auth}",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // An HTTP/2 connection that makes one request, then stays idle (answering PINGs).
        let tcp = tokio::net::TcpStream::connect(&s.http).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        let conn = tokio::spawn(conn);
        let req = hyper::Request::get(format!("http://{}/v1/models", s.http))
            .header("authorization", format!("Bearer {}", common::demo_key()))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
        // The edge closes it once nothing has been in flight for the intake timeout, so the
        // only connection slot frees up for the next client.
        tokio::time::timeout(std::time::Duration::from_secs(20), conn)
            .await
            .expect("idle HTTP/2 connection closed by the edge")
            .unwrap()
            .unwrap();
    });
    let (status, _, _) = exchange(&s.http, "GET", "/v1/models", &[], "");
    assert_eq!(status, 200);
}

#[test]
fn a_bad_credential_is_refused_before_the_body_is_read() {
    let s = serve("1", "4");
    // The body is never sent: the 401 must come from the head alone.
    let mut tcp = TcpStream::connect(&s.http).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        tcp,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer mk_demo-acme_wrong\r\nContent-Length: 100000\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = tcp.read(&mut buf).expect("answered without the body");
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert!(resp.contains("\"code\":\"unauthorized\""), "{resp}");
}

#[test]
fn unparsable_requests_get_openai_error_json_too() {
    let s = serve("1", "4");
    let send = |raw: &[u8]| {
        let mut tcp = TcpStream::connect(&s.http).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let _ = tcp.write_all(raw);
        let mut resp = String::new();
        let _ = tcp.read_to_string(&mut resp);
        resp
    };
    // A request line hyper cannot parse: its own 400, now with a body.
    let resp = send(b"GARBAGE\x01 / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let body: serde_json::Value =
        serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "bad_request", "{resp}");
    // Header fields larger than the read buffer: 431, with a body.
    let mut big = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 100_000));
    big.extend_from_slice(b"\r\n\r\n");
    let resp = send(&big);
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert!(resp.contains("\"code\":\"too_large\""), "{resp}");
}

#[test]
fn wrong_credentials_are_refused_on_http2_and_http3() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let s = serve("1", "4");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, region, body) = rt.block_on(h3_stream_as(&s, "mk_demo-acme_wrong", || {}));
    assert_eq!((status, region.as_str()), (401, ""), "{body}");
    assert!(body.contains("\"code\":\"unauthorized\""), "{body}");
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&s.http).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::post(format!("http://{}/v1/chat/completions", s.http))
            .header("authorization", "Bearer mk_demo-acme_wrong")
            .body(Full::new(bytes::Bytes::from_static(
                br#"{"model":"llama-3-8b","messages":[]}"#,
            )))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 401);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "unauthorized");
    });
}

#[test]
fn a_tenant_over_its_rate_gets_429_with_retry_after() {
    let s = common::edge_with(
        "[edge]\nlisten = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\
         [tls]\ndev_cert_dir = \"{dir}/certs\"\n[[region]]\nname = \"r\"\n\
         [[worker]]\nname = \"w\"\nregion = \"r\"\naddress = \"127.0.0.1:9\"\nmodels = [\"m\"]\npin = \"{dir}/certs/cert.pem\"\n\
         [tenants]\nacme = { requests_per_s = 0.5, burst = 1 }\nbund = {}\n{auth}",
    );
    let body = r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1}"#;
    // The first is admitted (then finds no worker: 503); the second is over the rate.
    let (first, _, _) = exchange(&s.http, "POST", "/v1/chat/completions", &[JSON], body);
    assert_eq!(first, 503);
    let (status, head, resp) = exchange(&s.http, "POST", "/v1/chat/completions", &[JSON], body);
    assert_eq!(status, 429, "{resp}");
    assert!(head.contains("retry-after: 2"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(v["error"]["code"], "rate_limited");
}

#[test]
fn admin_connections_beyond_the_cap_wait_their_turn() {
    let s = serve("1", "4");
    // Idle connections take every admin slot (they would close after the 10 s head timeout).
    let mut idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(&s.admin).unwrap())
        .collect();
    let mut next = TcpStream::connect(&s.admin).unwrap();
    next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    next.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 1024];
    let waiting = next
        .read(&mut buf)
        .expect_err("served beyond the admin cap");
    assert!(
        matches!(
            waiting.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{waiting}"
    );
    // One idle connection leaves: the waiting request is answered.
    drop(idle.pop());
    next.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let n = next.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[test]
fn https_front_door_serves_tls_with_the_edge_certificate() {
    let s = common::edge_with(
        "[edge]\nlisten = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nhttp_tls = true\n\
         [tls]\ndev_cert_dir = \"{dir}/certs\"\n[[region]]\nname = \"r\"\n\
         [[worker]]\nname = \"w\"\nregion = \"r\"\naddress = \"127.0.0.1:9\"\nmodels = [\"m\"]\npin = \"{dir}/certs/cert.pem\"\n[tenants]\nacme = {}\nbund = {}\n{auth}",
    );
    assert!(
        s.http.starts_with("https://"),
        "the edge names its front door https: {}",
        s.http
    );
    let addr = s.http.trim_start_matches("https://").to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A client that trusts exactly the edge's certificate, offering HTTP/1.1 by ALPN.
        let trust = meridian_protocol::client::Trust::pin_file(std::path::Path::new(&s.cert)).unwrap();
        let tls = meridian_protocol::client::tls::client_crypto(&trust, &[b"http/1.1"]).unwrap();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut stream = connector.connect(name, tcp).await.expect("TLS handshake");
        let req = format!(
            "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\r\n",
            common::demo_key()
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap_or_default();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let udp = s.edge.rsplit_once(':').unwrap().1;
        assert!(out.to_lowercase().contains(&format!("alt-svc: h3=\":{udp}\"")), "{out}");
        // Cleartext on the TLS port is not served.
        let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
        plain.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let _ = plain.read_to_end(&mut buf).await;
        assert!(!String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    });
}
