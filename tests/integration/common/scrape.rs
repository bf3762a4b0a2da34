//! Scraping a server's metrics as Prometheus does: an HTTP/1.1 `GET` over
//! plain TCP, and a parser of the text exposition format (OpenMetrics
//! text, a superset of Prometheus's) that keeps every sample with its
//! labels, and the declared type of every family.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP response: the status code, the headers (names lowercase) and
/// the body.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names in lowercase.
    pub headers: HashMap<String, String>,
    /// The body, as text.
    pub body: String,
}

/// Sends `method path` to `addr` over HTTP/1.1 (connection closed after
/// the answer) and reads the response.
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> HttpResponse {
    let mut tcp = TcpStream::connect(addr).await.expect("connect to metrics");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.expect("read response");
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// One sample: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (`fedreg_rpc_calls_total`,
    /// `fedreg_rpc_duration_seconds_bucket`...).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed exposition: every sample, and the type of every family.
#[derive(Debug, Default)]
pub struct Exposition {
    /// The samples, in order.
    pub samples: Vec<Sample>,
    /// Family name → declared type (`counter`, `gauge`, `histogram`).
    pub types: HashMap<String, String>,
}

impl Exposition {
    /// Parses the text format; panics, naming the line, on anything else.
    pub fn parse(text: &str) -> Exposition {
        let mut out = Exposition::default();
        assert!(text.ends_with("# EOF\n"), "the exposition ends with # EOF");
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                let mut words = comment.splitn(3, ' ');
                if let (Some("TYPE"), Some(name), Some(kind)) =
                    (words.next(), words.next(), words.next())
                {
                    out.types.insert(name.to_owned(), kind.to_owned());
                }
                continue;
            }
            assert!(!line.is_empty(), "an empty line in the exposition");
            out.samples.push(parse_sample(line));
        }
        out
    }

    /// The samples named `name` (whatever their labels).
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The value of the sample named `name` with exactly the labels
    /// `labels`, when there is one.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut found = self.named(name).filter(|s| s.labels == wanted);
        let value = found.next().map(|s| s.value);
        assert!(found.next().is_none(), "{name} {labels:?} appears twice");
        value
    }

    /// [`Exposition::get`], panicking when the sample is missing.
    #[track_caller]
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in {:#?}", self.samples))
    }
}

/// Parses `name{label="value",...} value` (or `name value`).
fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("bad line {line:?}"));
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = BTreeMap::new();
    if let Some(inside) = rest.strip_prefix('{') {
        (labels, rest) = parse_labels(inside, line);
    }
    let value = rest
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    Sample {
        name: name.to_owned(),
        labels,
        value: value
            .parse()
            .unwrap_or_else(|_| panic!("bad value {value:?} in {line:?}")),
    }
}

/// Parses `label="value",...}` (values with `\\`, `\"` and `\n`
/// escapes); returns the labels and what follows the brace.
fn parse_labels<'a>(mut rest: &'a str, line: &str) -> (BTreeMap<String, String>, &'a str) {
    let mut labels = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let (key, quoted) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("a label without a value in {line:?}"));
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i + 1,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped)) => value.push(escaped),
                    None => panic!("a dangling escape in {line:?}"),
                },
                Some((_, c)) => value.push(c),
                None => panic!("an unclosed label value in {line:?}"),
            }
        };
        labels.insert(key.to_owned(), value);
        rest = &quoted[end..];
    }
}

/// Scrapes `/metrics` at `addr`: checks the answer is the OpenMetrics text
/// format, and parses it.
pub async fn scrape(addr: SocketAddr) -> Exposition {
    let response = http(addr, "GET", "/metrics").await;
    assert_eq!(response.status, 200, "{response:?}");
    let content_type = response.headers.get("content-type").map(String::as_str);
    assert_eq!(
        content_type,
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    Exposition::parse(&response.body)
}

fn samples_parse_with_escaped_labels() {
    let sample = parse_sample(r#"m_total{a="x\"y",b="1\\2",c=""} 12.5"#);
    assert_eq!(sample.name, "m_total");
    assert_eq!(sample.value, 12.5);
    assert_eq!(sample.labels["a"], "x\"y");
    assert_eq!(sample.labels["b"], "1\\2");
    assert_eq!(sample.labels["c"], "");
    let bare = parse_sample("up 1");
    assert_eq!(
        (bare.name.as_str(), bare.value, bare.labels.len()),
        ("up", 1.0, 0)
    );
}

tests!(samples_parse_with_escaped_labels);
