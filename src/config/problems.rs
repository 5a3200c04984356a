//! Every problem in a config file in one run, in plain words, each at its key
//! (`sinks.grafana.url`) and line.
//!
//! serde stops at the first error. To go on, the value at fault is taken out
//! (so its default applies) or, when the key is required, replaced by a
//! stand-in, and the text is read again; problems at or under a key that was
//! taken out are consequences and are not reported. Validation then runs on
//! what could be read. serde's messages speak of Rust types (`expected
//! usize`); [`plain`] says them in the words of a config file.

use std::fmt;

use serde::de::DeserializeOwned;

/// One part of a key path: a table key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySegment {
    /// A key in a table.
    Key(String),
    /// An index in a list.
    Index(usize),
}

/// The segments of a path serde reported.
pub(crate) fn key_path(path: &serde_path_to_error::Path) -> Vec<KeySegment> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(KeySegment::Index(*index)),
            Segment::Map { key } => Some(KeySegment::Key(key.clone())),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// A key path as the config file's reader writes it: `ingest.allow[2]`.
pub(crate) fn key_text(path: &[KeySegment]) -> String {
    let mut text = String::new();
    for segment in path {
        match segment {
            KeySegment::Key(key) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            KeySegment::Index(index) => text.push_str(&format!("[{index}]")),
        }
    }
    text
}

/// One problem: the key, the line it is on, what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key, e.g. `sinks.grafana.url` or `ingest.allow[2]`.
    pub key: String,
    /// The line of the file the key is on (or of the table it belongs in).
    pub line: Option<usize>,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.problem),
            None => write!(f, "{}: {}", self.key, self.problem),
        }
    }
}

/// Most values taken out or stood in for before reading gives up; far more
/// than a config has keys.
const MAX_REPAIRS: usize = 256;

/// Stand-ins for a required key whose value was at fault, tried in turn
/// until one has the right type.
fn stand_ins() -> [toml::Value; 5] {
    [
        toml::Value::Array(Vec::new()),
        toml::Value::String(String::new()),
        toml::Value::Integer(0),
        toml::Value::Boolean(false),
        toml::Value::Table(toml::Table::new()),
    ]
}

/// The problems found so far in one config text.
pub(super) struct Problems {
    /// The key paths and messages, in the order found.
    found: Vec<(Vec<KeySegment>, String)>,
    /// Keys whose values were taken out or stood in for.
    repaired: Vec<Vec<KeySegment>>,
    /// Values read from the environment or a file, by key, with the
    /// reference as written: a message shows the reference, not the value.
    references: Vec<(Vec<KeySegment>, String, String)>,
    /// The parsed text with spans, for line numbers.
    lines: LineFinder,
}

impl Problems {
    pub(super) fn new(text: &str) -> Problems {
        Problems {
            found: Vec::new(),
            repaired: Vec::new(),
            references: Vec::new(),
            lines: LineFinder::new(text),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Whether a problem at `key` follows from a repair: at or under a
    /// repaired key, or at a table holding one (`sinks` is empty when its
    /// only sink could not be read).
    fn is_consequence(&self, key: &[KeySegment]) -> bool {
        self.repaired
            .iter()
            .any(|repaired| key.starts_with(repaired) || repaired.starts_with(key))
    }

    /// Adds a problem at `key` unless it follows from a repair.
    pub(super) fn add(&mut self, key: Vec<KeySegment>, message: String) {
        if !self.is_consequence(&key) && !self.found.iter().any(|(k, _)| *k == key) {
            self.found.push((key, message));
        }
    }

    /// Adds a validation problem, whose key is text (`sinks.out.url`).
    pub(super) fn add_text(&mut self, key: &str, message: String) {
        self.add(parse_key(key), message);
    }

    /// Resolves `${VAR}` and `file:` references with `expand`, which stops at
    /// the first that fails: that one is noted and stood in for by an empty
    /// string, and a fresh copy of `raw` is expanded again, so every
    /// reference is resolved exactly once in the table returned.
    pub(super) fn expand(
        &mut self,
        raw: &toml::Table,
        expand: impl Fn(&mut toml::Table) -> Result<(), (String, String)>,
    ) -> toml::Table {
        let mut failed: Vec<Vec<KeySegment>> = Vec::new();
        loop {
            let mut table = raw.clone();
            for key in &failed {
                if let Some(value) = value_at_mut(&mut table, key) {
                    *value = toml::Value::String(String::new());
                }
            }
            match expand(&mut table) {
                Ok(()) => {
                    collect_references(raw, &table, &mut Vec::new(), &mut self.references);
                    return table;
                }
                Err((key, message)) => {
                    let key = parse_key(&key);
                    if failed.contains(&key) || failed.len() >= MAX_REPAIRS {
                        // Cannot happen: a stood-in value is no reference.
                        self.add(key, message);
                        return table;
                    }
                    self.add(key.clone(), message);
                    self.repaired.push(key.clone());
                    failed.push(key);
                }
            }
        }
    }

    /// Reads `table` as a `T`, noting every problem found on the way: each
    /// value at fault is taken out, or stood in for when required, and the
    /// table read again. `prefix` is where the table sits in the file.
    /// Returns what could be read, `None` when nothing could.
    pub(super) fn read<T: DeserializeOwned>(
        &mut self,
        table: toml::Table,
        prefix: &[KeySegment],
    ) -> Option<T> {
        self.read_with(table, prefix, |table| {
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|err| {
                (
                    key_path(err.path()),
                    err.inner().message().trim_end().to_string(),
                )
            })
        })
    }

    /// [`Problems::read`] with a reader of its own, which reports the path
    /// of an error within `table` and serde's message.
    pub(super) fn read_with<T>(
        &mut self,
        mut table: toml::Table,
        prefix: &[KeySegment],
        read: impl Fn(toml::Table) -> Result<T, (Vec<KeySegment>, String)>,
    ) -> Option<T> {
        let value = self.repair_and_read(&mut table, prefix, read);
        if value.is_none() && !self.repaired.iter().any(|r| r.as_slice() == prefix) {
            self.repaired.push(prefix.to_vec());
        }
        value
    }

    fn repair_and_read<T>(
        &mut self,
        table: &mut toml::Table,
        prefix: &[KeySegment],
        read: impl Fn(toml::Table) -> Result<T, (Vec<KeySegment>, String)>,
    ) -> Option<T> {
        // Stand-ins in place and the next one to try, by key.
        let mut standing_in: Vec<(Vec<KeySegment>, usize)> = Vec::new();
        for _ in 0..MAX_REPAIRS {
            let (path, message) = match read(table.clone()) {
                Ok(value) => return Some(value),
                Err(err) => err,
            };
            // serde names an unknown or missing key in the message and puts
            // the error at its table; the problem is at the key itself.
            let mut at = path.clone();
            let named = named_key(&message);
            if let Some(name) = &named
                && at.last() != Some(&KeySegment::Key(name.clone()))
            {
                at.push(KeySegment::Key(name.clone()));
            }
            let mut full = prefix.to_vec();
            full.extend(at.iter().cloned());
            let found = value_at(table, &at).cloned();
            let mut message_text = plain(&message, found.as_ref());
            if let Some((_, reference, value)) =
                self.references.iter().find(|(key, ..)| *key == full)
            {
                message_text = message_text
                    .replace(
                        &format!("the string {value:?}"),
                        &format!("the value of {reference}"),
                    )
                    .replace(&format!("{value:?}"), &format!("the value of {reference}"));
            }
            self.add(full.clone(), message_text);
            // A value in a list: the whole list is taken out (taking out one
            // item would move the others).
            let target: Vec<KeySegment> =
                match at.iter().position(|s| matches!(s, KeySegment::Index(_))) {
                    Some(first_index) => at[..first_index].to_vec(),
                    None => at.clone(),
                };
            if target.is_empty() {
                return None;
            }
            let mut full_target = prefix.to_vec();
            full_target.extend(target.iter().cloned());
            if !self.repaired.contains(&full_target) {
                self.repaired.push(full_target);
            }
            let missing = message.starts_with("missing field");
            let standing = standing_in.iter_mut().find(|(key, _)| *key == target);
            match standing {
                // A stand-in of the wrong type: try the next.
                Some((key, next)) => {
                    let stand_in = stand_ins().into_iter().nth(*next)?;
                    *next += 1;
                    if !set_value(table, key, stand_in) {
                        return None;
                    }
                }
                None if missing || found.is_none() => {
                    // A required key (missing, or taken out before), or a
                    // problem with a table as a whole.
                    let [first, ..] = stand_ins();
                    if !set_value(table, &target, first) {
                        return None;
                    }
                    standing_in.push((target, 1));
                }
                None => {
                    remove_value(table, &target);
                }
            }
        }
        None
    }

    /// The problems, each message passed through `redact`, in the order of
    /// the file (problems without a line last).
    pub(super) fn finish(self, redact: impl Fn(&str) -> String) -> Vec<Problem> {
        let mut problems: Vec<Problem> = self
            .found
            .iter()
            .map(|(key, message)| Problem {
                key: key_text(key),
                line: self.lines.line(key),
                problem: redact(message),
            })
            .collect();
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        problems
    }
}

/// The strings of `expanded` that differ from `raw`: the values of `${VAR}`
/// and `file:` references, with the reference as written.
fn collect_references(
    raw: &toml::Table,
    expanded: &toml::Table,
    path: &mut Vec<KeySegment>,
    found: &mut Vec<(Vec<KeySegment>, String, String)>,
) {
    for (key, raw_value) in raw {
        if let Some(value) = expanded.get(key) {
            path.push(KeySegment::Key(key.clone()));
            collect_value_references(raw_value, value, path, found);
            path.pop();
        }
    }
}

fn collect_value_references(
    raw: &toml::Value,
    expanded: &toml::Value,
    path: &mut Vec<KeySegment>,
    found: &mut Vec<(Vec<KeySegment>, String, String)>,
) {
    match (raw, expanded) {
        (toml::Value::String(reference), toml::Value::String(value)) if reference != value => {
            found.push((path.clone(), reference.clone(), value.clone()));
        }
        (toml::Value::Table(raw), toml::Value::Table(expanded)) => {
            collect_references(raw, expanded, path, found);
        }
        (toml::Value::Array(raw), toml::Value::Array(expanded)) => {
            for (index, (raw, expanded)) in raw.iter().zip(expanded).enumerate() {
                path.push(KeySegment::Index(index));
                collect_value_references(raw, expanded, path, found);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The key an `unknown field` or `missing field` message names.
fn named_key(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("missing field `"))?;
    Some(rest.split('`').next()?.to_string())
}

/// `sinks.out.url` or `ingest.allow[2]` as segments. Keys are split at
/// every dot, so a key that has dots of its own is split too; such a key
/// then only finds no line.
fn parse_key(text: &str) -> Vec<KeySegment> {
    let mut path = Vec::new();
    for part in text.split('.') {
        let (key, indexes) = match part.find('[') {
            Some(at) => part.split_at(at),
            None => (part, ""),
        };
        if !key.is_empty() {
            path.push(KeySegment::Key(key.to_string()));
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            match index.trim_end_matches(']').parse() {
                Ok(index) => path.push(KeySegment::Index(index)),
                Err(_) => path.push(KeySegment::Key(format!("[{index}"))),
            }
        }
    }
    path
}

fn value_at<'a>(table: &'a toml::Table, path: &[KeySegment]) -> Option<&'a toml::Value> {
    let (KeySegment::Key(first), rest) = path.split_first()? else {
        return None;
    };
    let mut value = table.get(first)?;
    for segment in rest {
        value = match segment {
            KeySegment::Key(key) => value.as_table()?.get(key)?,
            KeySegment::Index(index) => value.as_array()?.get(*index)?,
        };
    }
    Some(value)
}

fn value_at_mut<'a>(
    table: &'a mut toml::Table,
    path: &[KeySegment],
) -> Option<&'a mut toml::Value> {
    let (KeySegment::Key(first), rest) = path.split_first()? else {
        return None;
    };
    let mut value = table.get_mut(first)?;
    for segment in rest {
        value = match segment {
            KeySegment::Key(key) => value.as_table_mut()?.get_mut(key)?,
            KeySegment::Index(index) => value.as_array_mut()?.get_mut(*index)?,
        };
    }
    Some(value)
}

/// The table holding the last key of `path`, and that key.
fn parent_mut<'a>(
    table: &'a mut toml::Table,
    path: &'a [KeySegment],
) -> Option<(&'a mut toml::Table, &'a str)> {
    let (KeySegment::Key(last), parents) = path.split_last()? else {
        return None;
    };
    if parents.is_empty() {
        return Some((table, last));
    }
    Some((value_at_mut(table, parents)?.as_table_mut()?, last))
}

fn remove_value(table: &mut toml::Table, path: &[KeySegment]) {
    if let Some((parent, key)) = parent_mut(table, path) {
        parent.remove(key);
    }
}

fn set_value(table: &mut toml::Table, path: &[KeySegment], value: toml::Value) -> bool {
    match parent_mut(table, path) {
        Some((parent, key)) => {
            parent.insert(key.to_string(), value);
            true
        }
        None => false,
    }
}

/// Line numbers of keys in the config text.
struct LineFinder {
    /// Where each line starts.
    starts: Vec<usize>,
    /// Byte offsets of every key and list item, by path.
    spans: Vec<(Vec<KeySegment>, usize)>,
}

impl LineFinder {
    fn new(text: &str) -> LineFinder {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        let mut spans = Vec::new();
        if let Ok(document) = toml::de::DeTable::parse(text) {
            collect_spans(document.get_ref(), &mut Vec::new(), &mut spans);
        }
        LineFinder { starts, spans }
    }

    /// The line of `key`, or of the nearest table above it that is in the text.
    fn line(&self, key: &[KeySegment]) -> Option<usize> {
        (1..=key.len()).rev().find_map(|len| {
            let offset = self
                .spans
                .iter()
                .find(|(path, _)| path.as_slice() == &key[..len])?
                .1;
            Some(self.starts.partition_point(|&start| start <= offset))
        })
    }
}

fn collect_spans(
    table: &toml::de::DeTable<'_>,
    path: &mut Vec<KeySegment>,
    spans: &mut Vec<(Vec<KeySegment>, usize)>,
) {
    for (key, value) in table.iter() {
        path.push(KeySegment::Key(key.get_ref().to_string()));
        spans.push((path.clone(), key.span().start));
        collect_value_spans(value.get_ref(), path, spans);
        path.pop();
    }
}

fn collect_value_spans(
    value: &toml::de::DeValue<'_>,
    path: &mut Vec<KeySegment>,
    spans: &mut Vec<(Vec<KeySegment>, usize)>,
) {
    match value {
        toml::de::DeValue::Table(table) => collect_spans(table, path, spans),
        toml::de::DeValue::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push(KeySegment::Index(index));
                spans.push((path.clone(), item.span().start));
                collect_value_spans(item.get_ref(), path, spans);
                path.pop();
            }
        }
        _ => {}
    }
}

/// serde's message in the words of a config file: `expected a whole number,
/// found the string "x"` for `invalid type: string "x", expected usize`.
/// `found` is the value at the key, when there is one, for messages that do
/// not quote it.
pub(super) fn plain(message: &str, found: Option<&toml::Value>) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((unexpected, expected)) = rest.rsplit_once(", expected ")
        {
            // The value in the file says best what was found (serde's words
            // for it depend on the type it was read as).
            let found = found.map_or_else(|| plain_found(unexpected), found_value);
            return format!("expected {}, found {found}", plain_expected(expected));
        }
    }
    if let Some(rest) = message.strip_prefix("invalid length ")
        && let Some((length, expected)) = rest.split_once(", expected ")
    {
        return format!(
            "expected {}, found {length} item(s)",
            plain_expected(expected)
        );
    }
    if message.starts_with("missing field `") {
        return "missing; this key is required".into();
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return format!("unknown value {}", rest.replace("`", "\""));
    }
    if message.starts_with("wanted exactly 1 element") {
        return format!("expected {}, found a table", plain_expected("string only"));
    }
    if message.starts_with("data did not match any variant of untagged enum") {
        return "is not in any of the forms this key accepts".into();
    }
    let quoted = found
        .map(|value| format!(", found {}", found_value(value)))
        .unwrap_or_default();
    match message {
        "invalid socket address syntax" => {
            format!("expected an address like \"0.0.0.0:9996\"{quoted}")
        }
        "invalid IP address syntax" => {
            format!("expected an IP address like \"10.1.0.5\"{quoted}")
        }
        _ => message.to_string(),
    }
}

/// A value as a message shows it.
fn found_value(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => format!("the string {text:?}"),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
        other => other.to_string(),
    }
}

/// What serde expected (a type's name or its `expecting`) in plain words.
fn plain_expected(expected: &str) -> String {
    let words = match expected {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "usize" | "u128" => "a whole number (0 or more)",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" | "bool" => "true or false",
        "a string" | "a borrowed string" | "string" | "a path string" | "path string" => {
            "a string in quotes"
        }
        "a character" | "char" => "a single character",
        "a sequence" | "sequence" => "a list",
        "a map" | "map" => "a table",
        "socket address" => "an address like \"0.0.0.0:9996\"",
        "IP address" => "an IP address like \"10.1.0.5\"",
        "unit" => "nothing",
        "string only" => "one of the words this key takes, in quotes",
        other if other.starts_with("struct ") || other.contains("tagged enum ") => "a table",
        other if other.starts_with("enum ") => "one of the words this key takes, in quotes",
        // The project's own `expecting` texts are plain already.
        other => return other.to_string(),
    };
    words.to_string()
}

/// What serde found (its `Unexpected`) in plain words.
fn plain_found(found: &str) -> String {
    let inner = |text: &str| text.trim_matches('`').to_string();
    if let Some(text) = found.strip_prefix("string ") {
        return format!("the string {text}");
    }
    for prefix in ["integer ", "floating point ", "boolean "] {
        if let Some(value) = found.strip_prefix(prefix) {
            return inner(value);
        }
    }
    if let Some(value) = found.strip_prefix("character ") {
        return format!("the character {}", inner(value));
    }
    match found {
        "sequence" => "a list".into(),
        "map" | "struct variant" | "newtype variant" | "tuple variant" => "a table".into(),
        "unit value" | "unit variant" | "Option value" => "nothing".into(),
        "enum" | "newtype struct" => "a value of another kind".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_words_become_plain_words() {
        assert_eq!(
            plain("invalid type: string \"x\", expected usize", None),
            "expected a whole number (0 or more), found the string \"x\""
        );
        assert_eq!(
            plain("invalid value: integer `-1`, expected u64", None),
            "expected a whole number (0 or more), found -1"
        );
        assert_eq!(
            plain("invalid type: integer `5`, expected a boolean", None),
            "expected true or false, found 5"
        );
        assert_eq!(
            plain("invalid type: sequence, expected struct HttpConfig", None),
            "expected a table, found a list"
        );
        assert_eq!(
            plain(
                "unknown variant `drop`, expected one of `drop_oldest`, `block`",
                None
            ),
            "unknown value \"drop\", expected one of \"drop_oldest\", \"block\""
        );
        assert_eq!(
            plain(
                "invalid socket address syntax",
                Some(&toml::Value::String("localhost".into()))
            ),
            "expected an address like \"0.0.0.0:9996\", found the string \"localhost\""
        );
        assert_eq!(
            plain("missing field `url`", None),
            "missing; this key is required"
        );
    }

    #[test]
    fn keys_are_written_as_in_the_file() {
        let path = parse_key("ingest.allow[2]");
        assert_eq!(
            path,
            vec![
                KeySegment::Key("ingest".into()),
                KeySegment::Key("allow".into()),
                KeySegment::Index(2)
            ]
        );
        assert_eq!(key_text(&path), "ingest.allow[2]");
        assert_eq!(key_text(&parse_key("a.b[0][1].c")), "a.b[0][1].c");
    }

    #[test]
    fn lines_are_found_for_keys_and_for_the_table_of_a_missing_key() {
        let text = "[ingest]\nlisten = [\"a\",\n  \"b\"]\n\n[sinks.grafana]\ntype = \"loki\"\n";
        let lines = LineFinder::new(text);
        assert_eq!(lines.line(&parse_key("ingest.listen")), Some(2));
        assert_eq!(lines.line(&parse_key("ingest.listen[1]")), Some(3));
        assert_eq!(lines.line(&parse_key("sinks.grafana.type")), Some(6));
        assert_eq!(lines.line(&parse_key("sinks.grafana.url")), Some(5));
        assert_eq!(lines.line(&parse_key("http.listen")), None);
    }
}
