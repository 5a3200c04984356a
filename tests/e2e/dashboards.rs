//! The Grafana dashboards shipped in `config/grafana/` query only what herald
//! produces: Prometheus expressions name metrics declared in `src/metrics.rs`, and
//! InfluxQL queries use the measurements, tags and fields of the InfluxDB sink's
//! `herald` schema (`src/sinks/influxdb/schema.rs`, field names from
//! `src/event/mod.rs`). The allowed names are read from those files when the test
//! runs, so a renamed metric or field fails here instead of in someone's Grafana.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use serde_json::Value;

use crate::harness::repo_root;

/// Tags every measurement of the `herald` schema may carry (`write_herald` in
/// src/sinks/influxdb/schema.rs). Categories and static tags are named in each
/// site's config, so a shipped dashboard cannot rely on them.
const COMMON_TAGS: [&str; 3] = ["source", "host", "level"];

/// The further tags of each `herald` measurement (`write_herald`'s `tag_fields`
/// and `outcome`); in the other measurements these names are fields.
const MEASUREMENT_TAGS: [(&str, &[&str]); 6] = [
    ("log", &["subsystem"]),
    ("qix_perf", &["method", "object_type", "activity"]),
    ("session", &["command"]),
    ("connection", &["command"]),
    ("task", &["outcome"]),
    ("engine_reload_failed", &[]),
];

/// InfluxQL functions that only work on numbers.
const NUMERIC_FUNCTIONS: [&str; 14] = [
    "mean",
    "median",
    "sum",
    "max",
    "min",
    "stddev",
    "spread",
    "percentile",
    "integral",
    "derivative",
    "non_negative_derivative",
    "difference",
    "moving_average",
    "cumulative_sum",
];

/// Words that are InfluxQL syntax, never a measurement, tag or field.
const KEYWORDS: [&str; 27] = [
    "select",
    "from",
    "where",
    "group",
    "by",
    "order",
    "limit",
    "slimit",
    "offset",
    "soffset",
    "and",
    "or",
    "not",
    "as",
    "asc",
    "desc",
    "show",
    "tag",
    "values",
    "with",
    "key",
    "field",
    "keys",
    "measurements",
    "series",
    "in",
    "tz",
];

/// The names a dashboard may use, read from the source tree.
struct Catalog {
    /// Every `"herald_..."` string in src/metrics.rs, and the `_bucket`, `_sum`
    /// and `_count` series of those declared as histograms.
    metrics: BTreeSet<String>,
    /// The `herald` entry of `MEASUREMENTS` in schema.rs.
    measurements: BTreeSet<String>,
    /// Every event field (`event/mod.rs`'s `fields!` table) and the extra fields
    /// `write_herald` writes, with the field's kind (`Text`, `Integer`, ...).
    fields: BTreeMap<String, String>,
}

impl Catalog {
    fn load() -> Catalog {
        let read = |path: &str| {
            fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        let schema = read("src/sinks/influxdb/schema.rs");
        let mut fields = event_fields(&read("src/event/mod.rs"));
        for name in herald_extra_fields(&schema) {
            fields.insert(name, "Text".to_string());
        }
        Catalog {
            metrics: herald_series_names(&read("src/metrics.rs")),
            measurements: herald_measurements(&schema),
            fields,
        }
    }

    fn tags(&self, measurement: &str) -> BTreeSet<&'static str> {
        let own = MEASUREMENT_TAGS
            .iter()
            .find(|(m, _)| *m == measurement)
            .map_or(&[][..], |(_, tags)| *tags);
        COMMON_TAGS.iter().chain(own).copied().collect()
    }

    /// The field's kind, when `measurement` has a field called `name`.
    fn field_kind(&self, measurement: &str, name: &str) -> Option<&str> {
        if self.tags(measurement).contains(name) {
            return None;
        }
        self.fields.get(name).map(String::as_str)
    }
}

/// The metric names of [`herald_metric_names`] plus the series Prometheus
/// exposes for each histogram (`describe_histogram!(CONST, ...)` in `source`).
fn herald_series_names(source: &str) -> BTreeSet<String> {
    let mut names = herald_metric_names(source);
    for declared in source.split("describe_histogram!(").skip(1) {
        let constant: String = declared
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let value = source
            .split(&format!("pub const {constant}: &str = \""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no `pub const {constant}: &str` in src/metrics.rs"));
        for suffix in ["_bucket", "_sum", "_count"] {
            names.insert(format!("{value}{suffix}"));
        }
    }
    names
}

/// Every string literal in `source` that starts with `herald_`.
fn herald_metric_names(source: &str) -> BTreeSet<String> {
    source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("herald_"))
        .map(str::to_string)
        .collect()
}

/// The quoted names in `("herald", &[...])` of schema.rs's `MEASUREMENTS`.
fn herald_measurements(schema: &str) -> BTreeSet<String> {
    let table = &schema[schema
        .find("pub const MEASUREMENTS")
        .expect("MEASUREMENTS in schema.rs")..];
    let entry = &table[table
        .find("\"herald\"")
        .expect("a \"herald\" entry in MEASUREMENTS")..];
    let list = &entry[entry.find('[').expect("[")..entry.find(']').expect("]")];
    list.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// `name -> kind` for every row `Variant => "name", Kind;` of `event/mod.rs`'s `fields!` table.
fn event_fields(event: &str) -> BTreeMap<String, String> {
    let table = &event[event
        .find("\nfields! {")
        .expect("the fields! table in event/mod.rs")..];
    let table = &table[..table.find("\n}").expect("the end of the fields! table")];
    table
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("=>")?;
            let (name, kind) = rest.split_once(',')?;
            let name = name.trim().trim_matches('"');
            Some((
                name.to_string(),
                kind.trim().trim_end_matches(';').to_string(),
            ))
        })
        .collect()
}

/// The fields `write_herald` adds beyond the event's own (`line.string("name", ...)`).
fn herald_extra_fields(schema: &str) -> Vec<String> {
    let start = schema
        .find("fn write_herald")
        .expect("write_herald in schema.rs");
    let body = &schema[start..];
    let body = &body[..body.find("\nfn ").unwrap_or(body.len())];
    body.split("line.string(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// Dashboard structure

fn dashboard_files() -> Vec<PathBuf> {
    let dir = repo_root().join("config").join("grafana");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

fn load(path: &PathBuf) -> (String, Value) {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
    (name, json)
}

/// Every panel that shows data: rows are only layout, so their nested panels
/// count and the row itself does not.
fn data_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        if panel["type"] == "row" {
            out.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            out.push(panel);
        }
    }
    out
}

/// The datasource type a target or template variable queries, falling back to
/// the panel's.
fn datasource_type<'a>(own: &'a Value, panel: &'a Value) -> &'a str {
    own["datasource"]["type"]
        .as_str()
        .or_else(|| panel["datasource"]["type"].as_str())
        .unwrap_or("")
}

/// Missing titles, uids, panels, datasources or queries, and datasource
/// references that an import would not resolve.
fn structure_problems(dashboard: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for key in ["title", "uid"] {
        if dashboard[key].as_str().is_none_or(str::is_empty) {
            problems.push(format!("no {key}"));
        }
    }
    if dashboard["panels"].as_array().is_none_or(Vec::is_empty) {
        problems.push("no panels".to_string());
    }
    let inputs: BTreeSet<String> = dashboard["__inputs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|input| input["name"].as_str())
        .map(|name| format!("${{{name}}}"))
        .collect();
    let datasource_problem = |what: &str, datasource: &Value, problems: &mut Vec<String>| {
        let uid = datasource["uid"].as_str().unwrap_or("");
        if datasource["type"].as_str().is_none_or(str::is_empty) || uid.is_empty() {
            problems.push(format!("{what}: datasource needs a type and a uid"));
        } else if !inputs.contains(uid) {
            problems.push(format!(
                "{what}: datasource uid {uid} is not an __inputs entry"
            ));
        }
    };
    let mut ids = BTreeSet::new();
    for panel in data_panels(dashboard) {
        let title = format!(
            "panel {:?}",
            panel["title"].as_str().unwrap_or("(untitled)")
        );
        if !ids.insert(panel["id"].as_u64()) {
            problems.push(format!("{title}: missing or repeated id"));
        }
        datasource_problem(&title, &panel["datasource"], &mut problems);
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        if targets.is_empty() {
            problems.push(format!("{title}: no targets"));
        }
        for target in targets {
            let what = format!("{title} target {}", target["refId"]);
            if target["refId"].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{what}: no refId"));
            }
            if !target["datasource"].is_null() {
                datasource_problem(&what, &target["datasource"], &mut problems);
            }
            let (key, ok) = match datasource_type(target, panel) {
                "prometheus" => ("expr", true),
                "influxdb" => ("query", target["rawQuery"] == true),
                other => {
                    problems.push(format!("{what}: unsupported datasource type {other:?}"));
                    continue;
                }
            };
            if !ok || target[key].as_str().is_none_or(|q| q.trim().is_empty()) {
                problems.push(format!("{what}: needs a raw, non-empty {key:?}"));
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            let what = format!("variable {}", variable["name"]);
            datasource_problem(&what, &variable["datasource"], &mut problems);
        }
    }
    problems
}

/// Every query in the dashboard as (where, datasource type, query text):
/// panel targets and query template variables.
fn queries(dashboard: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for panel in data_panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let kind = datasource_type(target, panel);
            let text = target["expr"].as_str().or_else(|| target["query"].as_str());
            if let Some(text) = text {
                let what = format!("panel {} target {}", panel["title"], target["refId"]);
                out.push((what, kind.to_string(), text.to_string()));
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = &variable["query"];
        let text = query.as_str().or_else(|| query["query"].as_str());
        if let Some(text) = text {
            let what = format!("variable {}", variable["name"]);
            let kind = datasource_type(variable, variable);
            out.push((what, kind.to_string(), text.to_string()));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Prometheus

/// Every `herald_*` metric name in a PromQL expression, exactly as written
/// (so `_bucket` or `_sum` suffixes are names of their own).
fn herald_names_in(expr: &str) -> Vec<&str> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("herald_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail.find(|c: char| !is_name(c)).unwrap_or(tail.len());
        if !before.is_some_and(is_name) {
            names.push(&tail[..end]);
        }
        rest = &tail[end..];
    }
    names
}

/// Metric names herald does not declare, and expressions naming no herald metric.
fn prometheus_problems(dashboard: &Value, catalog: &Catalog) -> Vec<String> {
    let mut problems = Vec::new();
    for (what, kind, expr) in queries(dashboard) {
        if kind != "prometheus" {
            continue;
        }
        let names = herald_names_in(&expr);
        if names.is_empty() {
            problems.push(format!("{what}: {expr:?} names no herald metric"));
        }
        for name in names {
            if !catalog.metrics.contains(name) {
                problems.push(format!("{what}: {name} is not declared in src/metrics.rs"));
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// InfluxQL

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// An identifier: `"quoted"` or a bare word.
    Ident { name: String, quoted: bool },
    /// `'string'`, `/regex/`, a number or duration, or a `$variable`.
    Literal,
    /// `=`, `=~`, `!=`, `<>`, `<=`, ...
    Operator(String),
    /// `(`, `)`, `,`, `*`, ...
    Punct(char),
}

fn tokenize(query: &str) -> Vec<Token> {
    let chars: Vec<char> = query.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    // Reads up to the closing `end`, honouring backslash escapes.
    let delimited = |i: &mut usize, end: char| {
        let mut text = String::new();
        *i += 1;
        while *i < chars.len() && chars[*i] != end {
            if chars[*i] == '\\' && *i + 1 < chars.len() {
                *i += 1;
            }
            text.push(chars[*i]);
            *i += 1;
        }
        *i += 1;
        text
    };
    while i < chars.len() {
        let c = chars[i];
        let after_regex_operator =
            matches!(tokens.last(), Some(Token::Operator(op)) if op == "=~" || op == "!~");
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' {
            let name = delimited(&mut i, '"');
            tokens.push(Token::Ident { name, quoted: true });
        } else if c == '\'' || (c == '/' && after_regex_operator) {
            delimited(&mut i, c);
            tokens.push(Token::Literal);
        } else if c == '$' || c.is_ascii_digit() {
            i += 1;
            if chars.get(i) == Some(&'{') {
                delimited(&mut i, '}');
            }
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
            tokens.push(Token::Literal);
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name = chars[start..i].iter().collect();
            tokens.push(Token::Ident {
                name,
                quoted: false,
            });
        } else if "=!<>~".contains(c) {
            let start = i;
            while i < chars.len() && "=!<>~".contains(chars[i]) {
                i += 1;
            }
            tokens.push(Token::Operator(chars[start..i].iter().collect()));
        } else {
            tokens.push(Token::Punct(c));
            i += 1;
        }
    }
    tokens
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Clause {
    Start,
    Select,
    From,
    Where,
    GroupBy,
    OrderBy,
    WithKey,
    Other,
}

/// Unknown measurements, tags that are not the measurement's tags, fields
/// herald does not write, and numeric functions over text fields.
fn influxql_problems(query: &str, catalog: &Catalog) -> Vec<String> {
    let tokens = tokenize(query);
    let word = |i: usize| match tokens.get(i) {
        Some(Token::Ident {
            name,
            quoted: false,
        }) => Some(name.to_ascii_lowercase()),
        _ => None,
    };
    let mut problems = Vec::new();

    // The measurement: exactly one `FROM name`.
    let froms: Vec<usize> = (0..tokens.len())
        .filter(|&i| word(i).as_deref() == Some("from"))
        .collect();
    let measurement = match (
        froms.as_slice(),
        froms.first().and_then(|&i| tokens.get(i + 1)),
    ) {
        ([_], Some(Token::Ident { name, .. })) => name.clone(),
        _ => {
            return vec![format!(
                "{query:?}: needs exactly one FROM naming a measurement"
            )];
        }
    };
    if !catalog.measurements.contains(&measurement) {
        problems.push(format!(
            "{query:?}: measurement {measurement:?} is not in the herald schema"
        ));
    }
    let tags = catalog.tags(&measurement);

    let mut clause = Clause::Start;
    // (function name, depth) of the calls the current token is inside.
    let mut calls: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        let next_is_paren = tokens.get(i + 1) == Some(&Token::Punct('('));
        match &tokens[i] {
            Token::Punct('(') => depth += 1,
            Token::Punct(')') => {
                depth -= 1;
                calls.retain(|&(_, d)| d <= depth);
            }
            Token::Ident { name, quoted } => {
                let lower = name.to_ascii_lowercase();
                let keyword = !quoted && KEYWORDS.contains(&lower.as_str());
                if keyword {
                    clause = match lower.as_str() {
                        "select" => Clause::Select,
                        "from" => Clause::From,
                        "where" => Clause::Where,
                        "by" if word(i.wrapping_sub(1)).as_deref() == Some("group") => {
                            Clause::GroupBy
                        }
                        "by" if word(i.wrapping_sub(1)).as_deref() == Some("order") => {
                            Clause::OrderBy
                        }
                        "key" if word(i.wrapping_sub(1)).as_deref() == Some("with") => {
                            Clause::WithKey
                        }
                        "group" | "order" | "with" => clause,
                        _ if ["and", "or", "not", "as", "asc", "desc", "in"]
                            .contains(&lower.as_str()) =>
                        {
                            clause
                        }
                        _ => Clause::Other,
                    };
                } else if !quoted && next_is_paren {
                    // A function call. `time(...)` and `fill(...)` hold only literals.
                    if lower == "time" || lower == "fill" {
                        let mut level = 0;
                        loop {
                            match tokens.get(i + 1) {
                                Some(Token::Punct('(')) => level += 1,
                                Some(Token::Punct(')')) => level -= 1,
                                None => break,
                                _ => {}
                            }
                            i += 1;
                            if level == 0 {
                                break;
                            }
                        }
                    } else {
                        calls.push((lower, depth + 1));
                    }
                } else if word(i.wrapping_sub(1)).as_deref() == Some("as") || lower == "time" {
                    // An alias, or the time column.
                } else if clause != Clause::From {
                    let function = calls.last().map(|(f, _)| f.as_str());
                    let problem =
                        identifier_problem(catalog, &tags, &measurement, name, clause, function);
                    problems.extend(problem.map(|p| format!("{query:?}: {p}")));
                }
            }
            _ => {}
        }
        i += 1;
    }
    problems
}

/// Why `name`, used in `clause` (inside a call to `function`, if any), is wrong.
fn identifier_problem(
    catalog: &Catalog,
    tags: &BTreeSet<&str>,
    measurement: &str,
    name: &str,
    clause: Clause,
    function: Option<&str>,
) -> Option<String> {
    let is_tag = tags.contains(name);
    let kind = catalog.field_kind(measurement, name);
    match clause {
        Clause::GroupBy | Clause::WithKey if !is_tag => Some(format!(
            "{name:?} is not a tag of {measurement:?} (tags: {tags:?})"
        )),
        Clause::Select | Clause::Where if !is_tag && kind.is_none() => Some(format!(
            "{name:?} is neither a tag nor a field herald writes to {measurement:?}"
        )),
        Clause::Select if function.is_some() && is_tag => Some(format!(
            "{name:?} is a tag of {measurement:?}, functions need a field"
        )),
        Clause::Select
            if function.is_some_and(|f| NUMERIC_FUNCTIONS.contains(&f))
                && !matches!(kind, Some("Integer" | "Decimal")) =>
        {
            Some(format!(
                "{}({name:?}) needs a numeric field; it is {kind:?}",
                function.unwrap()
            ))
        }
        Clause::OrderBy | Clause::Start | Clause::Other => Some(format!(
            "{name:?} is used where only `time` or syntax is expected"
        )),
        _ => None,
    }
}

/// The InfluxQL problems of every InfluxDB query in a dashboard.
fn influxdb_problems(dashboard: &Value, catalog: &Catalog) -> Vec<String> {
    queries(dashboard)
        .into_iter()
        .filter(|(_, kind, _)| kind == "influxdb")
        .flat_map(|(what, _, query)| {
            influxql_problems(&query, catalog)
                .into_iter()
                .map(move |p| format!("{what}: {p}"))
        })
        .collect()
}

/// Every problem the checks find in a dashboard's JSON text.
fn dashboard_problems(text: &str, catalog: &Catalog) -> Vec<String> {
    let dashboard: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => return vec![format!("not JSON: {e}")],
    };
    let mut problems = structure_problems(&dashboard);
    problems.extend(prometheus_problems(&dashboard, catalog));
    problems.extend(influxdb_problems(&dashboard, catalog));
    problems
}

fn report(problems: &[String]) -> String {
    problems.join("\n")
}

// ---------------------------------------------------------------------------
// Tests

#[test]
fn every_dashboard_is_json_with_a_title_a_uid_and_panels_that_each_have_a_datasource_and_a_query() {
    let files = dashboard_files();
    let names: Vec<String> = files.iter().map(|f| load(f).0).collect();
    for shipped in ["herald-influxdb.json", "herald-prometheus.json"] {
        assert!(
            names.iter().any(|n| n == shipped),
            "{shipped} missing from config/grafana: {names:?}"
        );
    }
    let mut uids = BTreeSet::new();
    for file in &files {
        let (name, dashboard) = load(file);
        let problems = structure_problems(&dashboard);
        assert!(problems.is_empty(), "{name}:\n{}", report(&problems));
        assert!(!data_panels(&dashboard).is_empty(), "{name}: only rows");
        let uid = dashboard["uid"].as_str().unwrap().to_string();
        assert!(uids.insert(uid.clone()), "{name}: uid {uid} is used twice");
    }
}

#[test]
fn every_metric_a_prometheus_dashboard_queries_is_declared_in_src_metrics_rs() {
    let catalog = Catalog::load();
    let mut checked = 0;
    for file in dashboard_files() {
        let (name, dashboard) = load(&file);
        checked += queries(&dashboard)
            .iter()
            .filter(|(_, kind, _)| kind == "prometheus")
            .count();
        let problems = prometheus_problems(&dashboard, &catalog);
        assert!(problems.is_empty(), "{name}:\n{}", report(&problems));
    }
    assert!(checked > 0, "no Prometheus query was checked");
}

#[test]
fn every_influxql_query_uses_only_measurements_tags_and_fields_the_herald_schema_writes() {
    let catalog = Catalog::load();
    let mut checked = 0;
    for file in dashboard_files() {
        let (name, dashboard) = load(&file);
        checked += queries(&dashboard)
            .iter()
            .filter(|(_, kind, _)| kind == "influxdb")
            .count();
        let problems = influxdb_problems(&dashboard, &catalog);
        assert!(problems.is_empty(), "{name}:\n{}", report(&problems));
    }
    assert!(checked > 0, "no InfluxQL query was checked");
}

#[test]
fn the_names_the_checks_allow_are_read_from_the_source_and_match_the_herald_schema() {
    let catalog = Catalog::load();
    for metric in [
        "herald_events_total",
        "herald_task_events_total",
        "herald_sink_queue_depth",
        "herald_event_latency_seconds_bucket",
    ] {
        assert!(
            catalog.metrics.contains(metric),
            "{metric}: {:?}",
            catalog.metrics
        );
    }
    assert!(
        catalog.metrics.iter().all(|m| !m.contains(' ')),
        "{:?}",
        catalog.metrics
    );
    let listed: BTreeSet<String> = MEASUREMENT_TAGS
        .iter()
        .map(|(m, _)| m.to_string())
        .collect();
    assert_eq!(
        listed, catalog.measurements,
        "update MEASUREMENT_TAGS from schema.rs"
    );
    assert_eq!(
        catalog.fields.get("process_time").map(String::as_str),
        Some("Decimal")
    );
    assert_eq!(
        catalog.fields.get("message").map(String::as_str),
        Some("Text")
    );
    assert!(catalog.fields.contains_key("sender") && catalog.fields.contains_key("time_source"));
    // The hard-coded tags are the ones schema.rs documents for the herald schema.
    let schema = fs::read_to_string(repo_root().join("src/sinks/influxdb/schema.rs")).unwrap();
    let herald = schema
        .split("//! * `herald`:")
        .nth(1)
        .expect("the herald schema's doc");
    let herald = &herald[..herald.find("//! * ").unwrap_or(herald.len())];
    for (_, own) in MEASUREMENT_TAGS {
        for tag in COMMON_TAGS.iter().chain(own.iter()) {
            assert!(
                herald.contains(&format!("`{tag}`")),
                "schema.rs does not document tag {tag}"
            );
        }
    }
}

#[test]
fn the_checks_reject_an_undeclared_metric_an_unknown_measurement_and_a_misused_tag_or_field() {
    let catalog = Catalog::load();
    let prometheus = |expr: &str| {
        serde_json::json!({
            "__inputs": [{ "name": "DS_PROMETHEUS", "type": "datasource", "pluginId": "prometheus" }],
            "title": "t", "uid": "u",
            "panels": [{
                "id": 1, "type": "timeseries", "title": "p",
                "datasource": { "type": "prometheus", "uid": "${DS_PROMETHEUS}" },
                "targets": [{ "refId": "A", "expr": expr }]
            }]
        })
        .to_string()
    };
    let influx = |query: &str| {
        serde_json::json!({
            "__inputs": [{ "name": "DS_INFLUXDB", "type": "datasource", "pluginId": "influxdb" }],
            "title": "t", "uid": "u",
            "panels": [{
                "id": 1, "type": "table", "title": "p",
                "datasource": { "type": "influxdb", "uid": "${DS_INFLUXDB}" },
                "targets": [{ "refId": "A", "query": query, "rawQuery": true }]
            }]
        })
        .to_string()
    };

    // The same shapes with good names pass, so a rejection below is the name's.
    let good = [
        prometheus("sum by (level) (rate(herald_events_total[1m])) * 60"),
        influx(
            r#"SELECT mean("process_time") FROM "qix_perf" WHERE $timeFilter AND "host" =~ /^$host$/ GROUP BY time($__interval), "method" fill(none)"#,
        ),
        influx(
            r#"SELECT "task_name", "host" FROM task WHERE "outcome" = 'failed' ORDER BY time DESC LIMIT 5"#,
        ),
    ];
    for text in &good {
        let problems = dashboard_problems(text, &catalog);
        assert!(problems.is_empty(), "{text}\n{}", report(&problems));
    }

    let bad = [
        (
            prometheus("sum(rate(herald_nonexistent_total[5m]))"),
            "herald_nonexistent_total",
        ),
        (
            prometheus("sum(rate(herald_events_total_bucket[5m]))"),
            "herald_events_total_bucket",
        ),
        (prometheus("up"), "names no herald metric"),
        (
            influx(r#"SELECT count("message") FROM "nope" WHERE $timeFilter"#),
            "\"nope\"",
        ),
        (
            influx(r#"SELECT count("message") FROM log_event WHERE $timeFilter"#),
            "\"log_event\"",
        ),
        (
            influx(r#"SELECT count("message") FROM "log" GROUP BY time(1m), "user_id""#),
            "\"user_id\" is not a tag",
        ),
        (
            influx(r#"SHOW TAG VALUES FROM "task" WITH KEY = "method""#),
            "\"method\" is not a tag",
        ),
        (
            influx(r#"SELECT count("msg") FROM "log""#),
            "\"msg\" is neither",
        ),
        (
            influx(r#"SELECT count("subsystem") FROM "log""#),
            "functions need a field",
        ),
        (
            influx(r#"SELECT mean("message") FROM "log""#),
            "needs a numeric field",
        ),
        (
            influx(r#"SELECT count("message") FROM "log" WHERE "userId" = 'x'"#),
            "\"userId\"",
        ),
        ("{ not json".to_string(), "not JSON"),
        (r#"{"uid": "u", "panels": []}"#.to_string(), "no title"),
    ];
    for (text, expected) in &bad {
        let problems = dashboard_problems(text, &catalog);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{text}\nwas not rejected for {expected:?}; problems:\n{}",
            report(&problems)
        );
    }
}
