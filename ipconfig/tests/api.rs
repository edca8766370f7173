//! The HTTP API over real sockets: the service started in-process on 127.0.0.1:0, driven
//! by a plain std `TcpStream` HTTP/1.1 client.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{eventually, ids, metric, once, report_json, Http};
use tether_ipconfig::{Config, Service};

fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        rebuild_interval_ms: 10,
        ..Config::default()
    }
}

fn start(config: Config) -> (Service, SocketAddr) {
    let service = Service::start(&config).expect("start the service");
    let addr = service.local_addr();
    (service, addr)
}

fn report(addr: SocketAddr, body: &[u8]) {
    let r = once(addr, "POST", "/v1/report", Some(body));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"status": "ok"}));
}

fn list(addr: SocketAddr) -> (u16, Value) {
    let r = once(addr, "GET", "/ip_list", None);
    (r.status, r.json())
}

/// Waits until `/ip_list` lists exactly `want` (as a set), and returns that answer.
fn wait_for_ids(addr: SocketAddr, want: &[&str]) -> Value {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    let mut last = Value::Null;
    eventually(Duration::from_secs(5), &format!("ids {want:?}"), || {
        let (_, body) = list(addr);
        let mut got = ids(&body);
        got.sort();
        last = body;
        got == want
    });
    last
}

fn metrics(addr: SocketAddr) -> String {
    let r = once(addr, "GET", "/metrics", None);
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    r.text()
}

#[test]
fn a_report_then_the_list_best_first() {
    let (_service, addr) = start(config());
    report(addr, &report_json("slow", "10.0.0.1:8900", 1.0, 500, false));
    report(
        addr,
        &report_json("fast", "gw-2.example:8900", 3.25, 10, false),
    );
    report(
        addr,
        &report_json("fast-crowded", "[2001:db8::3]:8900", 3.25, 5, false),
    );
    let body = wait_for_ids(addr, &["slow", "fast", "fast-crowded"]);
    assert_eq!(ids(&body), ["fast", "fast-crowded", "slow"]);
    assert_eq!(
        body["gateways"][0],
        serde_json::json!({"id": "fast", "addr": "gw-2.example:8900", "transports": {}, "score": {"dynamic": 3.25, "static": 10.0}})
    );
    assert_eq!(body["gateways"][1]["addr"], "[2001:db8::3]:8900");
    assert_eq!(body["gateways"][2]["score"]["dynamic"], 1.0);
    assert_eq!(body["gateways"][2]["score"]["static"], 500.0);
    let generated = body["generated_at_ms"].as_u64().expect("generated_at_ms");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        generated <= now && now - generated < 10_000,
        "{generated} vs {now}"
    );

    let r = once(addr, "GET", "/ip_list", None);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // HEAD answers the same status with no body.
    let mut http = Http::connect(addr);
    let head = http.request("HEAD", "/ip_list", None);
    assert_eq!(head.status, 200);

    // Scores are means over the samples present: a second, better report for "slow"
    // averages 1 and 5 GiB/s to 3, still below 3.25.
    report(addr, &report_json("slow", "10.0.0.1:8900", 5.0, 500, false));
    eventually(Duration::from_secs(5), "slow at 3.0", || {
        let (_, body) = list(addr);
        body["gateways"][2]["score"]["dynamic"] == 3.0
    });
    // A third at 5.75 makes the mean (1 + 5 + 5.75) / 3 = 3.9166… → 3.92: first.
    report(
        addr,
        &report_json("slow", "10.0.0.1:8900", 5.75, 500, false),
    );
    eventually(Duration::from_secs(5), "slow first", || {
        let (_, body) = list(addr);
        ids(&body).first().map(String::as_str) == Some("slow")
            && body["gateways"][0]["score"]["dynamic"] == 3.92
    });
}

/// A report with `transports` (and one more field a newer gateway may send).
fn report_with_transports(id: &str, transports: Value) -> Vec<u8> {
    let mut body: Value =
        serde_json::from_slice(&report_json(id, "10.0.0.1:8900", 1.0, 10, false)).unwrap();
    body["transports"] = transports;
    body["from_the_future"] = serde_json::json!({"anything": [1, 2]});
    body.to_string().into_bytes()
}

#[test]
fn the_list_carries_each_gateways_transports() {
    let (_service, addr) = start(config());
    report(
        addr,
        &report_with_transports(
            "both",
            serde_json::json!({"tcp": "10.0.0.1:8900", "ws": "10.0.0.1:8920", "wss": "gw.example:443", "quic": "10.0.0.1:9"}),
        ),
    );
    report(addr, &report_json("old", "10.0.0.2:8900", 1.0, 10, false));
    let body = wait_for_ids(addr, &["both", "old"]);
    let entry = |id: &str| {
        body["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(entry("both")["addr"], "10.0.0.1:8900", "addr is unchanged");
    assert_eq!(
        entry("both")["transports"],
        serde_json::json!({"tcp": "10.0.0.1:8900", "ws": "10.0.0.1:8920", "wss": "gw.example:443"}),
        "known transports only"
    );
    assert_eq!(entry("old")["addr"], "10.0.0.2:8900");
    assert_eq!(entry("old")["transports"], serde_json::json!({}));

    // A later report's transports replace the earlier ones.
    report(
        addr,
        &report_with_transports("both", serde_json::json!({"ws": "10.0.0.1:9920"})),
    );
    eventually(Duration::from_secs(5), "the new ws address", || {
        let (_, body) = list(addr);
        body["gateways"].as_array().is_some_and(|a| {
            a.iter()
                .any(|g| g["transports"] == serde_json::json!({"ws": "10.0.0.1:9920"}))
        })
    });
}

#[test]
fn cors_is_off_by_default() {
    let (_service, addr) = start(config());
    report(addr, &report_json("a", "10.0.0.1:8900", 1.0, 10, false));
    wait_for_ids(addr, &["a"]);
    let origin = [("Origin", "http://127.0.0.1:8080")];
    let r = Http::connect(addr).request_with("GET", "/ip_list", &origin, None);
    assert_eq!(r.status, 200);
    for name in ["access-control-allow-origin", "vary"] {
        assert_eq!(r.header(name), None, "{name}");
    }
    let r = Http::connect(addr).request_with(
        "OPTIONS",
        "/ip_list",
        &[
            ("Origin", "http://127.0.0.1:8080"),
            ("Access-Control-Request-Method", "GET"),
        ],
        None,
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn cors_lets_listed_origins_read_the_list_and_nothing_else() {
    let page = "http://127.0.0.1:8080";
    let (_service, addr) = start(Config {
        cors_origins: vec!["https://app.example".into(), page.into()],
        ..config()
    });
    report(addr, &report_json("a", "10.0.0.1:8900", 1.0, 10, false));
    wait_for_ids(addr, &["a"]);
    let get = |origin: Option<&str>| {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        Http::connect(addr).request_with("GET", "/ip_list", &headers, None)
    };

    // A listed origin reads the list; the answer says it varies by Origin.
    let r = get(Some(page));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(page));
    assert_eq!(r.header("vary"), Some("origin"));
    assert_eq!(ids(&r.json()), ["a"]);
    let r = get(Some("HTTPS://APP.EXAMPLE"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("HTTPS://APP.EXAMPLE")
    );
    // Another origin, or none, still gets the list (a browser keeps it from the page) but no
    // CORS header.
    for origin in [
        Some("https://evil.example"),
        Some("http://127.0.0.1:8081"),
        None,
    ] {
        let r = get(origin);
        assert_eq!(r.status, 200, "{origin:?}");
        assert_eq!(r.header("access-control-allow-origin"), None, "{origin:?}");
        assert_eq!(r.header("vary"), Some("origin"), "{origin:?}");
        assert_eq!(ids(&r.json()), ["a"]);
    }

    // Preflights: 204 with the methods for a listed origin, 403 for the rest.
    let preflight = |origin: Option<&str>| {
        let mut headers = vec![("Access-Control-Request-Method", "GET")];
        headers.extend(origin.map(|o| ("Origin", o)));
        Http::connect(addr).request_with("OPTIONS", "/ip_list", &headers, None)
    };
    let r = preflight(Some(page));
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(page));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, HEAD"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert!(r.body.is_empty());
    for origin in [Some("https://evil.example"), None] {
        let r = preflight(origin);
        assert_eq!(r.status, 403, "{origin:?}");
        assert_eq!(r.header("access-control-allow-origin"), None);
        assert!(r.json()["error"].as_str().unwrap().contains("cors_origins"));
    }

    // Never on reports, metrics or health: no header, and no preflight.
    let body = report_json("b", "10.0.0.2:8900", 1.0, 10, false);
    let r =
        Http::connect(addr).request_with("POST", "/v1/report", &[("Origin", page)], Some(&body));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = Http::connect(addr).request_with(
        "OPTIONS",
        "/v1/report",
        &[("Origin", page), ("Access-Control-Request-Method", "POST")],
        None,
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("access-control-allow-origin"), None);
    for path in ["/metrics", "/healthz"] {
        let r = Http::connect(addr).request_with("GET", path, &[("Origin", page)], None);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("access-control-allow-origin"), None, "{path}");
    }
}

#[test]
fn at_most_top_n_entries() {
    let (_service, addr) = start(Config {
        top_n: 3,
        ..config()
    });
    for i in 0..7 {
        report(
            addr,
            &report_json(
                &format!("gw{i}"),
                &format!("10.0.0.{i}:8900"),
                f64::from(i),
                1,
                false,
            ),
        );
    }
    eventually(Duration::from_secs(5), "the best three", || {
        let (_, body) = list(addr);
        ids(&body) == ["gw6", "gw5", "gw4"]
    });
}

#[test]
fn nothing_eligible_is_503_with_a_json_error() {
    let (_service, addr) = start(config());
    let (status, body) = list(addr);
    assert_eq!(status, 503);
    assert!(
        body["error"].as_str().unwrap().contains("no gateway"),
        "{body}"
    );
    assert!(body["generated_at_ms"].as_u64().is_some());
}

#[test]
fn stale_gateways_are_dropped_without_further_reports() {
    let (_service, addr) = start(Config {
        stale_after_ms: 400,
        ..config()
    });
    report(addr, &report_json("quiet", "10.0.0.1:8900", 2.0, 1, false));
    report(addr, &report_json("chatty", "10.0.0.2:8900", 1.0, 1, false));
    wait_for_ids(addr, &["quiet", "chatty"]);
    // chatty keeps reporting every 100 ms, quiet does not: quiet goes after 400 ms.
    let started = Instant::now();
    eventually(Duration::from_secs(5), "quiet dropped", || {
        report(addr, &report_json("chatty", "10.0.0.2:8900", 1.0, 1, false));
        std::thread::sleep(Duration::from_millis(90));
        ids(&list(addr).1) == ["chatty"]
    });
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Then chatty stops: with no report at all, the list empties on its own.
    eventually(Duration::from_secs(5), "503 once chatty is stale", || {
        list(addr).0 == 503
    });
    let text = metrics(addr);
    assert_eq!(
        metric(&text, "tether_ipconfig_gateways_stale_dropped_total"),
        2.0
    );
    assert_eq!(
        metric(&text, r#"tether_ipconfig_gateways{state="live"}"#),
        0.0
    );
}

#[test]
fn draining_and_full_gateways_are_not_listed() {
    let (_service, addr) = start(config());
    report(
        addr,
        &report_json("draining", "10.0.0.1:8900", 9.0, 9, true),
    );
    report(addr, &report_json("full", "10.0.0.2:8900", 9.0, 0, false));
    report(addr, &report_json("open", "10.0.0.3:8900", 1.0, 1, false));
    wait_for_ids(addr, &["open"]);
    let text = metrics(addr);
    assert_eq!(
        metric(&text, r#"tether_ipconfig_gateways{state="draining"}"#),
        1.0
    );
    assert_eq!(
        metric(&text, r#"tether_ipconfig_gateways{state="full"}"#),
        1.0
    );
    assert_eq!(
        metric(&text, r#"tether_ipconfig_gateways{state="live"}"#),
        1.0
    );
    // Draining over: listed again, first (its window kept its 9 GiB/s).
    report(
        addr,
        &report_json("draining", "10.0.0.1:8900", 9.0, 9, false),
    );
    eventually(Duration::from_secs(5), "draining back", || {
        ids(&list(addr).1) == ["draining", "open"]
    });
}

/// 10,000 GET /ip_list over three equal gateways on four keep-alive connections: each
/// gateway is first within ±5% of a third.
#[test]
fn a_herd_is_split_evenly_over_equal_gateways() {
    let (_service, addr) = start(config());
    for (id, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")] {
        report(
            addr,
            &report_json(id, &format!("{ip}:8900"), 2.0, 100, false),
        );
    }
    wait_for_ids(addr, &["a", "b", "c"]);
    let started = Instant::now();
    let firsts: Vec<HashMap<String, u32>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(move || {
                    let mut http = Http::connect(addr);
                    let mut first = HashMap::new();
                    for _ in 0..2_500 {
                        let r = http.get("/ip_list");
                        assert_eq!(r.status, 200);
                        let body = r.json();
                        let order = ids(&body);
                        assert_eq!(order.len(), 3);
                        *first.entry(order[0].clone()).or_insert(0) += 1;
                    }
                    first
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut total: HashMap<String, u32> = HashMap::new();
    for f in firsts {
        for (id, n) in f {
            *total.entry(id).or_insert(0) += n;
        }
    }
    assert_eq!(total.values().sum::<u32>(), 10_000);
    for id in ["a", "b", "c"] {
        let n = total.get(id).copied().unwrap_or(0);
        assert!(
            (3_167..=3_500).contains(&n),
            "{id} first {n} times: {total:?}"
        );
    }
    eprintln!(
        "herd: 10,000 requests in {:?}, firsts {total:?}",
        started.elapsed()
    );
}

/// Table: a bad report → its status, the field named (if any), the rejection reason; the
/// list is the same afterwards.
#[test]
fn bad_reports_are_refused_with_a_json_error_and_harm_nobody() {
    let (_service, addr) = start(Config {
        max_report_bytes: 1024,
        ..config()
    });
    report(addr, &report_json("good", "10.0.0.1:8900", 2.0, 7, false));
    let before = wait_for_ids(addr, &["good"]);

    let valid: Value =
        serde_json::from_slice(&report_json("good", "10.0.0.1:8900", 0.0, 0, false)).unwrap();
    let with = |key: &str, v: Value| {
        let mut o = valid.clone();
        o[key] = v;
        o.to_string().into_bytes()
    };
    let without = |key: &str| {
        let mut o = valid.clone();
        o.as_object_mut().unwrap().remove(key);
        o.to_string().into_bytes()
    };
    let oversize = {
        let mut o = valid.clone();
        o["padding"] = Value::String("x".repeat(2000));
        o.to_string().into_bytes()
    };
    /// (name, body, status, field named, rejection reason)
    type Case<'a> = (&'a str, Vec<u8>, u16, Option<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "malformed json",
            b"{\"id\": \"good\",".to_vec(),
            400,
            None,
            "malformed",
        ),
        ("not an object", b"[]".to_vec(), 400, None, "malformed"),
        ("empty body", Vec::new(), 400, None, "malformed"),
        (
            "missing field",
            without("max_connections"),
            400,
            Some("max_connections"),
            "invalid",
        ),
        (
            "negative number",
            with("bytes_out_per_s", serde_json::json!(-1)),
            400,
            Some("bytes_out_per_s"),
            "invalid",
        ),
        (
            "negative count",
            with("connections", serde_json::json!(-3)),
            400,
            Some("connections"),
            "invalid",
        ),
        (
            "bad addr",
            with("addr", serde_json::json!("not an address")),
            400,
            Some("addr"),
            "invalid",
        ),
        (
            "addr port 0",
            with("addr", serde_json::json!("10.0.0.1:0")),
            400,
            Some("addr"),
            "invalid",
        ),
        (
            "cpu over 100",
            with("cpu", serde_json::json!(250)),
            400,
            Some("cpu"),
            "invalid",
        ),
        (
            "draining not bool",
            with("draining", serde_json::json!("yes")),
            400,
            Some("draining"),
            "invalid",
        ),
        (
            "id empty",
            with("id", serde_json::json!("")),
            400,
            Some("id"),
            "invalid",
        ),
        (
            "transports not an object",
            with("transports", serde_json::json!("ws://10.0.0.1:8920")),
            400,
            Some("transports"),
            "invalid",
        ),
        (
            "transport address bad",
            with(
                "transports",
                serde_json::json!({"tcp": "10.0.0.1:8900", "ws": "10.0.0.1"}),
            ),
            400,
            Some("transports.ws"),
            "invalid",
        ),
        ("oversize body", oversize, 413, None, "too_large"),
    ];
    let mut counts: HashMap<&str, f64> = HashMap::new();
    for (name, body, status, field, reason) in &cases {
        let r = once(addr, "POST", "/v1/report", Some(body));
        assert_eq!(r.status, *status, "{name}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"), "{name}");
        let json = r.json();
        let message = json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: {json}"));
        assert!(!message.is_empty(), "{name}");
        if let Some(field) = field {
            assert_eq!(json["field"], *field, "{name}: {json}");
            assert!(
                message.starts_with(&format!("{field}: ")),
                "{name}: {message}"
            );
        }
        *counts.entry(reason).or_default() += 1.0;
    }

    // An oversize body sent chunked (no Content-Length) is refused the same way.
    let mut http = Http::connect(addr);
    let chunk = "x".repeat(1500);
    http.send_raw(
        format!(
            "POST /v1/report HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        )
        .as_bytes(),
    );
    let r = http.read_response();
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("1024"));
    *counts.entry("too_large").or_default() += 1.0;

    // Garbage that is not HTTP at all just gets its connection closed by hyper.
    let mut garbage = Http::connect(addr);
    garbage.send_raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n");
    let r = garbage.read_response();
    assert_eq!(r.status, 400);

    // The wrong method is a JSON 405.
    let r = once(addr, "GET", "/v1/report", None);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(r.json()["error"], "method not allowed");

    // The list is unaffected: same gateway, same score.
    std::thread::sleep(Duration::from_millis(50));
    let (status, after) = list(addr);
    assert_eq!(status, 200);
    assert_eq!(after["gateways"], before["gateways"]);

    let text = metrics(addr);
    for (reason, n) in counts {
        let series = format!("tether_ipconfig_reports_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&text, &series), n, "{series}");
    }
    assert_eq!(metric(&text, "tether_ipconfig_reports_accepted_total"), 1.0);
    assert_eq!(
        metric(
            &text,
            r#"tether_ipconfig_http_requests_total{endpoint="report",class="4xx"}"#
        ),
        (cases.len() + 1) as f64
    );
}

#[test]
fn past_max_gateways_new_ids_get_503() {
    let (_service, addr) = start(Config {
        max_gateways: 2,
        ..config()
    });
    report(addr, &report_json("a", "10.0.0.1:8900", 1.0, 1, false));
    report(addr, &report_json("b", "10.0.0.2:8900", 1.0, 1, false));
    let r = once(
        addr,
        "POST",
        "/v1/report",
        Some(&report_json("c", "10.0.0.3:8900", 9.0, 1, false)),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("max_gateways"));
    // Known gateways still report.
    report(addr, &report_json("a", "10.0.0.1:8900", 2.0, 1, false));
    wait_for_ids(addr, &["a", "b"]);
    let text = metrics(addr);
    assert_eq!(
        metric(
            &text,
            r#"tether_ipconfig_reports_rejected_total{reason="full"}"#
        ),
        1.0
    );
}

#[test]
fn healthz_metrics_and_unknown_paths() {
    let (_service, addr) = start(config());
    let r = once(addr, "GET", "/healthz", None);
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let r = once(addr, "GET", "/nope", None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["path"], "/nope");
    let r = once(addr, "POST", "/ip_list", Some(b"{}"));
    assert_eq!(r.status, 405);
    let _ = list(addr); // 503: nothing reported
    let text = metrics(addr);
    let v = |s: &str| metric(&text, s);
    assert_eq!(
        v(r#"tether_ipconfig_http_requests_total{endpoint="healthz",class="2xx"}"#),
        1.0
    );
    assert_eq!(
        v(r#"tether_ipconfig_http_requests_total{endpoint="other",class="4xx"}"#),
        2.0
    );
    assert_eq!(
        v(r#"tether_ipconfig_http_requests_total{endpoint="ip_list",class="5xx"}"#),
        1.0
    );
    assert_eq!(
        v(r#"tether_ipconfig_http_request_duration_seconds_count{endpoint="ip_list"}"#),
        1.0
    );
    assert_eq!(
        v(r#"tether_ipconfig_http_request_duration_seconds_bucket{endpoint="ip_list",le="+Inf"}"#),
        1.0
    );
    assert!(text.contains("# TYPE tether_ipconfig_http_request_duration_seconds histogram"));
}

#[test]
fn stop_is_graceful_and_quick_with_idle_keep_alive_connections() {
    let (service, addr) = start(config());
    let mut idle = Http::connect(addr);
    assert_eq!(idle.get("/healthz").status, 200);
    let started = Instant::now();
    service.stop();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn two_services_in_one_process_keep_their_own_lists() {
    let (_a, addr_a) = start(config());
    let (_b, addr_b) = start(config());
    report(
        addr_a,
        &report_json("only-a", "10.0.0.1:8900", 1.0, 1, false),
    );
    report(
        addr_b,
        &report_json("only-b", "10.0.0.2:8900", 1.0, 1, false),
    );
    wait_for_ids(addr_a, &["only-a"]);
    wait_for_ids(addr_b, &["only-b"]);
}

#[test]
fn binding_a_used_port_is_an_error_not_a_panic() {
    let (_service, addr) = start(config());
    let err = Service::start(&Config {
        listen: addr,
        ..config()
    })
    .expect_err("port in use");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}
