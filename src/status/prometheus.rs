//! Reads herald's own `/metrics` text into the sums the status page shows.
//! Only herald's counters are read; anything else in the text is skipped.

use std::collections::BTreeMap;

use crate::metrics::{
    DEAD_LETTERS_LOST, EVENTS, INGEST_DATAGRAMS, INGEST_KERNEL_DROPS, INGEST_REJECTED,
    PARSE_ERRORS, PIPELINE_DROPPED, ROUTE_UNROUTED, SINK_DELIVERED, SINK_FAILED, SINK_RETRIES,
};

/// The sums by key: `type/<type>`, `source/<source>`, `level/<level>`,
/// `host/<host>` (events), `datagrams`, `drop/<stage>/<reason>`, and
/// `sink/<name>/delivered|retries|failed`.
pub fn sums(text: &str) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    let mut add = |key: String, value: f64| *sums.entry(key).or_insert(0.0) += value;
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((name, labels, value)) = sample(line) else {
            continue;
        };
        let label = |wanted: &str| {
            labels
                .iter()
                .find(|(name, _)| name == wanted)
                .map_or("none", |(_, value)| value.as_str())
        };
        match name {
            EVENTS => {
                for what in ["type", "source", "level", "host"] {
                    add(format!("{what}/{}", label(what)), value);
                }
            }
            INGEST_DATAGRAMS => add("datagrams".into(), value),
            INGEST_KERNEL_DROPS => add("drop/ingest/kernel_receive_buffer".into(), value),
            INGEST_REJECTED => add(format!("drop/ingest/{}", label("reason")), value),
            PIPELINE_DROPPED => {
                add(
                    format!("drop/{}/{}", label("stage"), label("reason")),
                    value,
                );
            }
            PARSE_ERRORS => add(format!("drop/parse/{}", label("reason")), value),
            ROUTE_UNROUTED => add("drop/route/unrouted".into(), value),
            DEAD_LETTERS_LOST => add("drop/dead_letter/lost".into(), value),
            SINK_FAILED => {
                add("drop/sink/failed".into(), value);
                add(format!("sink/{}/failed", label("sink")), value);
            }
            SINK_DELIVERED => add(format!("sink/{}/delivered", label("sink")), value),
            SINK_RETRIES => add(format!("sink/{}/retries", label("sink")), value),
            _ => {}
        }
    }
    sums
}

/// A sample's labels, name and value.
type Labels = Vec<(String, String)>;

/// One sample line: `name{label="value",...} number`.
fn sample(line: &str) -> Option<(&str, Labels, f64)> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let Some((name, rest)) = head.split_once('{') else {
        return Some((head, Vec::new(), value));
    };
    let mut labels = Vec::new();
    let mut chars = rest.chars();
    loop {
        let label: String = chars.by_ref().take_while(|&c| c != '=').collect();
        let label = label.trim_start_matches(',').to_string();
        if label.is_empty() || label == "}" {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut text = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => text.push('\n'),
                    other => text.push(other),
                },
                '"' => break,
                c => text.push(c),
            }
        }
        labels.push((label, text));
    }
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn herald_counters_are_summed_by_what_the_page_shows() {
        let text = r#"# HELP herald_events_total Sense events
# TYPE herald_events_total counter
herald_events_total{type="log",source="engine",level="ERROR",host="node1"} 3
herald_events_total{type="task",source="scheduler",level="INFO",host="node \"2\", the \\ one"} 2
herald_events_total{type="log",source="proxy",level="none",host="node1"} 1
herald_pipeline_dropped_total{stage="sink",reason="queue_full",sink="out"} 7
herald_ingest_rejected_total{listener="0.0.0.0:9996",reason="not_allowed"} 4
herald_sink_events_delivered_total{sink="out"} 6
herald_sink_events_failed_total{sink="out"} 1
herald_ingest_datagrams_total{listener="a"} 10
herald_ingest_datagrams_total{listener="b"} 5
something_else{x="y"} 99
herald_events_total{broken 5
"#;
        let sums = sums(text);
        assert_eq!(sums["type/log"], 4.0);
        assert_eq!(sums["type/task"], 2.0);
        assert_eq!(sums["host/node1"], 4.0);
        assert_eq!(sums["host/node \"2\", the \\ one"], 2.0);
        assert_eq!(sums["level/none"], 1.0);
        assert_eq!(sums["drop/sink/queue_full"], 7.0);
        assert_eq!(sums["drop/ingest/not_allowed"], 4.0);
        assert_eq!(sums["drop/sink/failed"], 1.0);
        assert_eq!(sums["sink/out/delivered"], 6.0);
        assert_eq!(sums["sink/out/failed"], 1.0);
        assert_eq!(sums["datagrams"], 15.0);
        assert_eq!(sums.len(), 16, "{sums:?}");
    }
}
