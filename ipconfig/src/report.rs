//! A gateway's load report (`POST /v1/report`) and its validation.
//!
//! A report is one JSON object:
//!
//! ```json
//! {"id": "gw-1", "addr": "10.0.0.7:8900", "connections": 1200, "max_connections": 100000,
//!  "bytes_in_per_s": 5.0e6, "bytes_out_per_s": 7.5e6, "bandwidth_bytes_per_s": 1.25e9,
//!  "cpu": 12.5, "draining": false,
//!  "transports": {"tcp": "10.0.0.7:8900", "ws": "10.0.0.7:8920"}}
//! ```
//!
//! Every field is required but `transports` (gateways older than it do not send it);
//! unknown fields are ignored (a newer gateway may send more), and so are unknown transport
//! names inside `transports`. The body is checked field by field so that a rejection names
//! the field at fault (`transports.ws` for one transport). `id`, `addr` and every transport's
//! address are judged by the rules every daemon's `check` uses for its own id and advertised
//! addresses ([`member_id`], [`dial_addr`]), so a gateway that passes `check` is not refused:
//!
//! | field | accepted |
//! |---|---|
//! | `id` | 1–128 printable ASCII characters, no spaces (`!`..=`~`) |
//! | `addr` | `host:port` clients dial: an IPv4 address, `[IPv6]`, or a DNS name; port 1–65535; not `0.0.0.0` / `[::]` |
//! | `connections`, `max_connections` | whole numbers, 0 ..= 2^40. `connections` may exceed `max_connections` (a gateway whose limit was lowered by a reload): the gateway is then full |
//! | `bytes_in_per_s`, `bytes_out_per_s`, `bandwidth_bytes_per_s` | numbers (integer or not), 0 ..= 1e15 |
//! | `cpu` | a number, 0 ..= 100 (percent of the whole host) |
//! | `draining` | `true` or `false` |
//! | `transports` | optional; an object whose `tcp`, `tls`, `ws`, `wss` (each optional) are `host:port` as for `addr`; other names ignored |

use serde::Serialize;
use serde_json::{Map, Value};
use tether_daemon::config::validate::{dial_addr, member_id};
use thiserror::Error;

/// Largest `connections` / `max_connections`.
pub(crate) const MAX_COUNT: u64 = 1 << 40;
/// Largest byte rate (1 PB/s).
pub(crate) const MAX_BYTES_PER_S: f64 = 1e15;

/// One validated report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub id: String,
    pub addr: String,
    pub connections: u64,
    pub max_connections: u64,
    pub bytes_in_per_s: f64,
    pub bytes_out_per_s: f64,
    pub bandwidth_bytes_per_s: f64,
    pub cpu: f64,
    pub draining: bool,
    /// Where clients dial each transport the gateway offers.
    pub transports: Transports,
}

/// The `host:port` a client dials for each transport a gateway offers (v1 frames over plain
/// TCP, TLS, WebSocket, WebSocket over TLS); a transport it does not offer is `None`.
/// Serialized as `/ip_list` shows it: only the transports offered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Transports {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wss: Option<String>,
}

impl Transports {
    /// Validates a report's `transports` object: each known transport's address, by name.
    fn from_value(v: &Value) -> Result<Transports, ReportError> {
        let Value::Object(o) = v else {
            return Err(bad("transports", wrong_type("an object", v)));
        };
        let addr = |name: &'static str, key: &str| -> Result<Option<String>, ReportError> {
            match o.get(key) {
                None => Ok(None),
                Some(Value::String(s)) => match dial_addr(s) {
                    Ok(()) => Ok(Some(s.clone())),
                    Err(p) => Err(bad(name, p.to_string())),
                },
                Some(other) => Err(bad(name, wrong_type("a string", other))),
            }
        };
        Ok(Transports {
            tcp: addr("transports.tcp", "tcp")?,
            tls: addr("transports.tls", "tls")?,
            ws: addr("transports.ws", "ws")?,
            wss: addr("transports.wss", "wss")?,
        })
    }
}

/// Why a report was refused (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReportError {
    /// Not JSON at all.
    #[error("the body is not valid JSON: {0}")]
    Malformed(String),
    /// JSON, but not an object.
    #[error("the body must be a JSON object")]
    NotAnObject,
    /// One field is missing, of the wrong type or out of range.
    #[error("{field}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
}

impl ReportError {
    /// The field at fault, if one is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ReportError::Field { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Not a JSON object at all (as opposed to an object with a bad field).
    pub fn is_malformed(&self) -> bool {
        !matches!(self, ReportError::Field { .. })
    }
}

fn bad(field: &'static str, problem: impl Into<String>) -> ReportError {
    ReportError::Field {
        field,
        problem: problem.into(),
    }
}

impl Report {
    /// Parses and validates a request body.
    pub fn parse(body: &[u8]) -> Result<Report, ReportError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ReportError::Malformed(e.to_string()))?;
        let Value::Object(object) = value else {
            return Err(ReportError::NotAnObject);
        };
        Report::from_object(&object)
    }

    /// Validates the fields of an already parsed object, in the order of the table above.
    pub fn from_object(o: &Map<String, Value>) -> Result<Report, ReportError> {
        let id = string(o, "id")?;
        member_id(&id).map_err(|p| bad("id", p.to_string()))?;
        let addr = string(o, "addr")?;
        dial_addr(&addr).map_err(|p| bad("addr", p.to_string()))?;
        Ok(Report {
            id,
            addr,
            connections: count(o, "connections")?,
            max_connections: count(o, "max_connections")?,
            bytes_in_per_s: rate(o, "bytes_in_per_s")?,
            bytes_out_per_s: rate(o, "bytes_out_per_s")?,
            bandwidth_bytes_per_s: rate(o, "bandwidth_bytes_per_s")?,
            cpu: number(o, "cpu", 100.0)?,
            draining: match field(o, "draining")? {
                Value::Bool(b) => *b,
                other => return Err(bad("draining", wrong_type("true or false", other))),
            },
            transports: match o.get("transports") {
                None => Transports::default(),
                Some(v) => Transports::from_value(v)?,
            },
        })
    }
}

fn field<'a>(o: &'a Map<String, Value>, name: &'static str) -> Result<&'a Value, ReportError> {
    o.get(name).ok_or_else(|| bad(name, "missing"))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(want: &str, got: &Value) -> String {
    format!("must be {want}, not {}", type_name(got))
}

fn string(o: &Map<String, Value>, name: &'static str) -> Result<String, ReportError> {
    match field(o, name)? {
        Value::String(s) => Ok(s.clone()),
        other => Err(bad(name, wrong_type("a string", other))),
    }
}

/// A whole number in 0..=MAX_COUNT.
fn count(o: &Map<String, Value>, name: &'static str) -> Result<u64, ReportError> {
    let v = field(o, name)?;
    let Value::Number(n) = v else {
        return Err(bad(name, wrong_type("a whole number", v)));
    };
    match n.as_u64() {
        Some(x) if x <= MAX_COUNT => Ok(x),
        Some(x) => Err(bad(name, format!("{x} is too large (at most {MAX_COUNT})"))),
        None if n.as_i64().is_some() || n.as_f64().is_some_and(|f| f < 0.0) => {
            Err(bad(name, format!("must not be negative (got {n})")))
        }
        None => Err(bad(name, format!("must be a whole number (got {n})"))),
    }
}

/// A byte rate: a number in 0..=MAX_BYTES_PER_S.
fn rate(o: &Map<String, Value>, name: &'static str) -> Result<f64, ReportError> {
    number(o, name, MAX_BYTES_PER_S)
}

/// A finite number in 0..=max.
fn number(o: &Map<String, Value>, name: &'static str, max: f64) -> Result<f64, ReportError> {
    let v = field(o, name)?;
    let x = match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    };
    match x {
        None => Err(bad(name, wrong_type("a number", v))),
        Some(x) if !x.is_finite() => Err(bad(name, "must be finite")),
        Some(x) if x < 0.0 => Err(bad(name, format!("must not be negative (got {x})"))),
        Some(x) if x > max => Err(bad(name, format!("{x} is too large (at most {max})"))),
        // -0.0 passes `x < 0.0`; adding +0.0 stores it as +0.0.
        Some(x) => Ok(x + 0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "id": "gw-1", "addr": "127.0.0.1:8900", "connections": 10, "max_connections": 100,
            "bytes_in_per_s": 1000, "bytes_out_per_s": 2000.5, "bandwidth_bytes_per_s": 1.25e9,
            "cpu": 12.5, "draining": false
        })
    }

    fn with(key: &str, value: Value) -> Vec<u8> {
        let mut v = valid();
        v[key] = value;
        serde_json::to_vec(&v).unwrap()
    }

    fn without(key: &str) -> Vec<u8> {
        let mut v = valid();
        v.as_object_mut().unwrap().remove(key);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn a_valid_report_parses_and_unknown_fields_are_ignored() {
        let r = Report::parse(&with("extra", json!("ignored"))).unwrap();
        assert_eq!(r.id, "gw-1");
        assert_eq!(r.addr, "127.0.0.1:8900");
        assert_eq!((r.connections, r.max_connections), (10, 100));
        assert_eq!(r.bytes_in_per_s, 1000.0);
        assert_eq!(r.bytes_out_per_s, 2000.5);
        assert_eq!(r.bandwidth_bytes_per_s, 1.25e9);
        assert_eq!(r.cpu, 12.5);
        assert!(!r.draining);
        assert_eq!(
            r.transports,
            Transports::default(),
            "an older gateway sends none"
        );
        // More connections than the limit is accepted (the limit may have been lowered).
        assert_eq!(
            Report::parse(&with("connections", json!(1000)))
                .unwrap()
                .connections,
            1000
        );
    }

    #[test]
    fn transports_are_kept_by_name_and_unknown_ones_ignored() {
        let r = Report::parse(&with(
            "transports",
            json!({"tcp": "10.0.0.1:8900", "ws": "gw.example:8920", "wss": "[2001:db8::1]:443", "quic": 7}),
        ))
        .unwrap();
        assert_eq!(
            r.transports,
            Transports {
                tcp: Some("10.0.0.1:8900".into()),
                tls: None,
                ws: Some("gw.example:8920".into()),
                wss: Some("[2001:db8::1]:443".into()),
            }
        );
        assert_eq!(
            serde_json::to_value(&r.transports).unwrap(),
            json!({"tcp": "10.0.0.1:8900", "ws": "gw.example:8920", "wss": "[2001:db8::1]:443"})
        );
        let empty = Report::parse(&with("transports", json!({}))).unwrap();
        assert_eq!(empty.transports, Transports::default());
        assert_eq!(serde_json::to_string(&empty.transports).unwrap(), "{}");
    }

    /// Table: body → the field named in the error (None: not an object at all).
    #[test]
    fn every_bad_report_names_its_field() {
        let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
            ("not json", b"{\"id\":".to_vec(), None),
            ("empty body", Vec::new(), None),
            ("array", b"[1,2]".to_vec(), None),
            ("string", b"\"gw\"".to_vec(), None),
            ("missing id", without("id"), Some("id")),
            ("missing draining", without("draining"), Some("draining")),
            (
                "missing bandwidth",
                without("bandwidth_bytes_per_s"),
                Some("bandwidth_bytes_per_s"),
            ),
            ("empty id", with("id", json!("")), Some("id")),
            ("id with space", with("id", json!("gw 1")), Some("id")),
            ("id non-ascii", with("id", json!("gw-é")), Some("id")),
            ("id control", with("id", json!("gw\n1")), Some("id")),
            (
                "id too long",
                with("id", json!("x".repeat(129))),
                Some("id"),
            ),
            ("id number", with("id", json!(7)), Some("id")),
            (
                "addr no port",
                with("addr", json!("10.0.0.1")),
                Some("addr"),
            ),
            (
                "addr port 0",
                with("addr", json!("10.0.0.1:0")),
                Some("addr"),
            ),
            (
                "addr port big",
                with("addr", json!("10.0.0.1:65536")),
                Some("addr"),
            ),
            (
                "addr port sign",
                with("addr", json!("gw.example:+80")),
                Some("addr"),
            ),
            (
                "addr unspecified",
                with("addr", json!("0.0.0.0:8900")),
                Some("addr"),
            ),
            (
                "addr v6 unspecified",
                with("addr", json!("[::]:8900")),
                Some("addr"),
            ),
            (
                "addr v6 bare",
                with("addr", json!("::1:8900")),
                Some("addr"),
            ),
            (
                "addr bad v6",
                with("addr", json!("[::g]:8900")),
                Some("addr"),
            ),
            (
                "addr bad ipv4",
                with("addr", json!("1.2.3:8900")),
                Some("addr"),
            ),
            (
                "addr bad ipv4 octet",
                with("addr", json!("1.2.3.256:8900")),
                Some("addr"),
            ),
            (
                "addr underscore",
                with("addr", json!("gw_1.example:8900")),
                Some("addr"),
            ),
            (
                "addr hyphen end",
                with("addr", json!("gw-.example:8900")),
                Some("addr"),
            ),
            (
                "addr empty label",
                with("addr", json!("gw..example:8900")),
                Some("addr"),
            ),
            (
                "addr empty host",
                with("addr", json!(":8900")),
                Some("addr"),
            ),
            (
                "addr scheme",
                with("addr", json!("http://gw:8900")),
                Some("addr"),
            ),
            (
                "connections negative",
                with("connections", json!(-1)),
                Some("connections"),
            ),
            (
                "connections fraction",
                with("connections", json!(1.5)),
                Some("connections"),
            ),
            (
                "connections string",
                with("connections", json!("10")),
                Some("connections"),
            ),
            (
                "connections huge",
                with("connections", json!(1u64 << 41)),
                Some("connections"),
            ),
            (
                "max negative",
                with("max_connections", json!(-5)),
                Some("max_connections"),
            ),
            (
                "max null",
                with("max_connections", Value::Null),
                Some("max_connections"),
            ),
            (
                "bytes_in negative",
                with("bytes_in_per_s", json!(-0.5)),
                Some("bytes_in_per_s"),
            ),
            (
                "bytes_out string",
                with("bytes_out_per_s", json!("1")),
                Some("bytes_out_per_s"),
            ),
            (
                "bandwidth huge",
                with("bandwidth_bytes_per_s", json!(1e16)),
                Some("bandwidth_bytes_per_s"),
            ),
            ("cpu above 100", with("cpu", json!(100.5)), Some("cpu")),
            ("cpu negative", with("cpu", json!(-1)), Some("cpu")),
            (
                "draining string",
                with("draining", json!("no")),
                Some("draining"),
            ),
            (
                "draining number",
                with("draining", json!(0)),
                Some("draining"),
            ),
            (
                "transports string",
                with("transports", json!("ws://h:1")),
                Some("transports"),
            ),
            (
                "transports null",
                with("transports", Value::Null),
                Some("transports"),
            ),
            (
                "transports array",
                with("transports", json!(["h:1"])),
                Some("transports"),
            ),
            (
                "transport number",
                with("transports", json!({"ws": 8920})),
                Some("transports.ws"),
            ),
            (
                "transport unspecified",
                with("transports", json!({"tcp": "h:1", "wss": "0.0.0.0:443"})),
                Some("transports.wss"),
            ),
            (
                "transport scheme",
                with("transports", json!({"tcp": "ws://h:1"})),
                Some("transports.tcp"),
            ),
            (
                "transport no port",
                with("transports", json!({"tls": "gw.example"})),
                Some("transports.tls"),
            ),
        ];
        for (name, body, want) in cases {
            let err = Report::parse(&body).expect_err(name);
            assert_eq!(err.field(), want, "{name}: {err}");
            assert_eq!(err.is_malformed(), want.is_none(), "{name}");
            if let Some(field) = want {
                assert!(
                    err.to_string().starts_with(&format!("{field}: ")),
                    "{name}: {err}"
                );
            }
        }
    }

    #[test]
    fn boundaries_are_inclusive() {
        assert!(Report::parse(&with("cpu", json!(100))).is_ok());
        assert!(Report::parse(&with("cpu", json!(0))).is_ok());
        assert!(Report::parse(&with("connections", json!(MAX_COUNT))).is_ok());
        assert!(Report::parse(&with("bandwidth_bytes_per_s", json!(1e15))).is_ok());
        assert!(Report::parse(&with("id", json!("x".repeat(128)))).is_ok());
        assert!(Report::parse(&with("id", json!("!~\"\\"))).is_ok());
        let r = Report::parse(&with("bytes_in_per_s", json!(-0.0))).unwrap();
        assert_eq!(r.bytes_in_per_s.to_bits(), 0.0f64.to_bits());
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic; whatever parses satisfies every documented range.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(r) = Report::parse(&body) {
                proptest::prop_assert!(member_id(&r.id).is_ok());
                proptest::prop_assert!(dial_addr(&r.addr).is_ok());
            }
        }

        #[test]
        fn arbitrary_numbers_are_accepted_only_in_range(x in proptest::num::f64::ANY) {
            let body = format!(
                r#"{{"id":"g","addr":"h:1","connections":0,"max_connections":0,"bytes_in_per_s":{x:?},"bytes_out_per_s":0,"bandwidth_bytes_per_s":0,"cpu":0,"draining":true}}"#
            );
            match Report::parse(body.as_bytes()) {
                Ok(r) => proptest::prop_assert!((0.0..=MAX_BYTES_PER_S).contains(&r.bytes_in_per_s)),
                Err(e) => proptest::prop_assert!(
                    !(x.is_finite() && (0.0..=MAX_BYTES_PER_S).contains(&x)) || e.is_malformed(),
                    "{x}: {e}"
                ),
            }
        }
    }
}
