//! The Prometheus dashboard against a real Prometheus (Debian's `prometheus`
//! package) scraping a real herald: every PromQL expression of
//! `config/grafana/herald-prometheus.json`, with its dashboard variables filled
//! in as Grafana does, must return data. A panel that would always be empty
//! fails here, not in an operator's Grafana.
//!
//! Without prometheus this test says so and passes, except under CI (`CI` set).

use std::time::Duration;

use serde_json::Value;

#[path = "../support/prometheus.rs"]
mod prometheus_server;
use prometheus_server::Prometheus;

use crate::harness::{ConfigBuilder, Herald, poll_until, repo_root, sample_datagrams, send};

/// Every `expr` of the dashboard's panels, with the panel's title, and the
/// queries of its variables (`label_values(<selector>, label)` → the selector).
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repo_root().join("config/grafana/herald-prometheus.json");
    let text = std::fs::read_to_string(&path).expect("the Prometheus dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard JSON");
    fn walk(panel: &Value, out: &mut Vec<(String, String)>) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let title = panel["title"].as_str().unwrap_or("(untitled)");
                out.push((title.to_string(), expr.to_string()));
            }
        }
        for child in panel["panels"].as_array().into_iter().flatten() {
            walk(child, out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard, &mut out);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["definition"].as_str())
            .unwrap_or_default();
        if let Some(inner) = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
        {
            let selector = inner
                .rsplit_once(',')
                .map_or(inner, |(selector, _)| selector);
            out.push((
                format!("variable {}", variable["name"].as_str().unwrap_or("?")),
                selector.trim().to_string(),
            ));
        }
    }
    out
}

/// `expr` as Grafana sends it with "All" selected and a short rate window.
fn fill_in(expr: &str) -> String {
    expr.replace("$__rate_interval", "30s")
        .replace("$instance", ".*")
        .replace("$host", ".*")
}

#[test]
fn every_query_of_the_prometheus_dashboard_returns_data_from_a_real_prometheus() {
    let config = ConfigBuilder::new()
        // Session events go nowhere: counted as unrouted.
        .events_sink_key("match = { exclude = { types = [\"session\"] } }")
        // A webhook nothing listens on, given up at once: retries, failures
        // and dead letters.
        .extra(
            "[sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nbody = \"ndjson\"\n\
             max_retries = 1\nretry_initial_ms = 50\nretry_max_ms = 100\n",
        )
        .build();
    let mut herald = Herald::start(&config);
    let Some(prometheus) = Prometheus::start(&[herald.http]) else {
        return;
    };
    let samples = herald.send_samples();
    // Not on the allowlist, and not a Sense datagram: rejected and parse errors.
    send("127.0.0.2", herald.udp, &[&sample_datagrams()[0]]);
    send(
        "127.0.0.1",
        herald.udp,
        &[b"not a sense datagram".as_slice()],
    );
    herald.wait_for_events(samples - 1);
    herald.wait_for("the webhook's events in the dead-letter file", |h| {
        h.metric("herald_sink_events_failed_total", &[("sink", "hook")]) > 0.0
    });
    assert!(
        poll_until(Duration::from_secs(30), || prometheus.targets_up()),
        "prometheus does not scrape herald:\n{}",
        prometheus.log()
    );
    // A few scrapes after the events, so that rates have two samples.
    std::thread::sleep(Duration::from_secs(4));

    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let mut empty = Vec::new();
    for (title, expr) in &queries {
        let filled = fill_in(expr);
        assert!(
            !filled.contains('$'),
            "{title}: a variable is left in {filled}"
        );
        // The same Prometheus may still be catching up: a few tries.
        let mut result = Err(String::new());
        for _ in 0..10 {
            result = prometheus.query(&filled);
            if result.as_ref().is_ok_and(|r| !r.is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        match result {
            Ok(series) if !series.is_empty() => {}
            Ok(_) => empty.push(format!("{title}: {filled} returned no data")),
            Err(err) => empty.push(format!("{title}: {filled} failed: {err}")),
        }
    }
    assert!(
        empty.is_empty(),
        "{} of {} queries show nothing:\n{}\n\nherald's /metrics:\n{}",
        empty.len(),
        queries.len(),
        empty.join("\n"),
        herald.metrics_text()
    );
}
