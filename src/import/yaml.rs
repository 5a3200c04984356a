//! Reading a YAML config by dotted key paths, each value with the path it was
//! found at (for the import's notes). Values are read as the Node.js tools
//! read them: `true`/`false` (also as text), numbers also when quoted, and an
//! empty value or `null` as absent.

use std::fmt;

use yaml_rust2::{Yaml, YamlLoader};

/// The YAML could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    message: String,
}

impl YamlError {
    pub(super) fn new(message: impl Into<String>) -> YamlError {
        YamlError {
            message: message.into(),
        }
    }
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for YamlError {}

/// A value in the document and where it is.
#[derive(Debug, Clone)]
pub struct Node {
    yaml: Yaml,
    path: String,
}

/// Reads the first document of `text`.
///
/// # Errors
///
/// When `text` is not YAML (with the line and column), or is empty.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let documents = YamlLoader::load_from_str(text)
        .map_err(|err| YamlError::new(format!("not valid YAML: {err}")))?;
    let yaml = documents
        .into_iter()
        .next()
        .ok_or_else(|| YamlError::new("the file holds no YAML document"))?;
    Ok(Node {
        yaml,
        path: String::new(),
    })
}

impl Node {
    /// The child at `name`.
    pub fn key(&self, name: &str) -> Option<Node> {
        let child = &self.yaml[name];
        if matches!(child, Yaml::BadValue) {
            return None;
        }
        Some(Node {
            yaml: child.clone(),
            path: if self.path.is_empty() {
                name.to_string()
            } else {
                format!("{}.{name}", self.path)
            },
        })
    }

    /// The node at a dotted path below this one (`udpServerConfig.portLogEvents`).
    pub fn get(&self, path: &str) -> Option<Node> {
        path.split('.')
            .try_fold(self.clone(), |node, name| node.key(name))
    }

    /// Where this node is (`Butler-SOS.logEvents`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The dotted path of `path` below this node, for messages.
    pub fn path_of(&self, path: &str) -> String {
        if self.path.is_empty() {
            path.to_string()
        } else {
            format!("{}.{path}", self.path)
        }
    }

    /// A text value (numbers and booleans as written); `None` when absent,
    /// empty or not a scalar.
    pub fn text(&self, path: &str) -> Option<String> {
        let text = match self.get(path)?.yaml {
            Yaml::String(text) | Yaml::Real(text) => text,
            Yaml::Integer(n) => n.to_string(),
            Yaml::Boolean(b) => b.to_string(),
            _ => return None,
        };
        let text = text.trim().to_string();
        (!text.is_empty()).then_some(text)
    }

    /// Whether a switch is on (`true`, or the text `true`); absent is off.
    pub fn on(&self, path: &str) -> bool {
        match self.get(path).map(|node| node.yaml) {
            Some(Yaml::Boolean(b)) => b,
            Some(Yaml::String(text)) => text.trim().eq_ignore_ascii_case("true"),
            _ => false,
        }
    }

    /// A whole number, also when quoted.
    pub fn number(&self, path: &str) -> Option<u64> {
        match self.get(path)?.yaml {
            Yaml::Integer(n) => u64::try_from(n).ok(),
            Yaml::String(text) | Yaml::Real(text) => {
                let text = text.trim();
                text.parse::<u64>().ok().or_else(|| {
                    text.parse::<f64>()
                        .ok()
                        .filter(|f| *f >= 0.0)
                        .map(|f| f as u64)
                })
            }
            _ => None,
        }
    }

    /// The items of a list (none when absent or not a list).
    pub fn list(&self, path: &str) -> Vec<Node> {
        let Some(node) = self.get(path) else {
            return Vec::new();
        };
        match &node.yaml {
            Yaml::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| Node {
                    yaml: item.clone(),
                    path: format!("{}[{i}]", node.path),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The texts of a list of scalars.
    pub fn texts(&self, path: &str) -> Vec<String> {
        self.list(path)
            .iter()
            .filter_map(|item| item.text_here())
            .collect()
    }

    /// This node as text.
    pub fn text_here(&self) -> Option<String> {
        let text = match &self.yaml {
            Yaml::String(text) | Yaml::Real(text) => text.clone(),
            Yaml::Integer(n) => n.to_string(),
            _ => return None,
        };
        let text = text.trim().to_string();
        (!text.is_empty()).then_some(text)
    }

    /// `name: value` pairs from a list of `{ name, value }` (Butler's tags
    /// and categories).
    pub fn pairs(&self, path: &str) -> Vec<(String, String)> {
        self.list(path)
            .iter()
            .filter_map(|item| Some((item.text("name")?, item.text("value")?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_as_the_node_tools_read_them() {
        let doc = parse(
            "Top:\n  a:\n    port: 9996\n    quoted: '9997'\n    on: true\n    text_on: 'true'\n    off: false\n    empty:\n    name: <IP or FQDN>\n    list: [x, 2, '']\n    tags:\n      - name: qs_env\n        value: prod\n      - name: broken\n",
        )
        .unwrap();
        let a = doc.get("Top.a").unwrap();
        assert_eq!(a.path(), "Top.a");
        assert_eq!(a.number("port"), Some(9996));
        assert_eq!(a.number("quoted"), Some(9997));
        assert!(a.on("on") && a.on("text_on") && !a.on("off") && !a.on("missing"));
        assert_eq!(a.text("empty"), None);
        assert_eq!(a.text("name").as_deref(), Some("<IP or FQDN>"));
        assert_eq!(a.texts("list"), ["x", "2"]);
        assert_eq!(
            a.pairs("tags"),
            [("qs_env".to_string(), "prod".to_string())]
        );
        assert_eq!(a.list("tags")[1].path(), "Top.a.tags[1]");
        assert!(doc.get("Top.b.c").is_none());
    }

    #[test]
    fn bad_yaml_is_named() {
        let err = parse("a: [b\n").unwrap_err();
        assert!(err.to_string().starts_with("not valid YAML"), "{err}");
        assert!(parse("").is_err());
    }
}
