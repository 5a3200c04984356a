//! A tiny HTTP/1.1 client for herald's endpoint, and a Prometheus text reader.

use super::*;

/// A one-shot HTTP/1.1 request: status code and body.
pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_request_with(addr, method, path, "")
}

/// Like [`http_request`], with extra header lines (each ending in `\r\n`).
pub fn http_request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no header end in {text:?}"),
        )
    })?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad status line in {head:?}"),
            )
        })?;
    Ok((status, body.to_string()))
}

/// Splits `name{a="b",c="d"} 1` into the name, its labels and the value.
fn parse_sample(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some((series, BTreeMap::new(), value));
    };
    let inner = rest.strip_suffix('}')?;
    let mut labels = BTreeMap::new();
    let mut chars = inner.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut val = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next()? {
                    'n' => val.push('\n'),
                    other => val.push(other),
                },
                '"' => break,
                c => val.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), val);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some((name, labels, value))
}

/// Sum of the samples of exactly `name` whose labels include all of `labels`;
/// `None` when there is no such sample.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for (sample, sample_labels, value) in text.lines().filter_map(parse_sample) {
        if sample == name
            && labels
                .iter()
                .all(|(k, v)| sample_labels.get(*k).map(String::as_str) == Some(*v))
        {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// Metric names that have at least one sample.
pub fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .filter_map(parse_sample)
        .map(|(name, _, _)| name.to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn harness_metric_reader_sums_matching_labelled_samples() {
    let text = "# HELP x_total X.\n# TYPE x_total counter\n\
                x_total{listener=\"[::1]:9\",reason=\"a\"} 2\n\
                x_total{listener=\"127.0.0.1:9\",reason=\"b\"} 3\n\
                x_total_other 7\nplain 1.5\n";
    assert_eq!(metric_sum(text, "x_total", &[]), Some(5.0));
    assert_eq!(metric_sum(text, "x_total", &[("reason", "b")]), Some(3.0));
    assert_eq!(
        metric_sum(text, "x_total", &[("listener", "[::1]:9")]),
        Some(2.0)
    );
    assert_eq!(metric_sum(text, "x_total", &[("reason", "c")]), None);
    assert_eq!(metric_sum(text, "plain", &[]), Some(1.5));
    assert_eq!(metric_names(text), ["plain", "x_total", "x_total_other"]);
}
