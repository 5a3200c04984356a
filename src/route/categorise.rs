//! What every event gets before routing: the static `[tags]` and the
//! categorisation rules (Butler SOS style: levels plus starts-with / ends-with /
//! contains / regex on the message), which add categories or drop the event.

use std::collections::BTreeMap;
use std::sync::Arc;

use memchr::memmem::Finder;
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::{MatchConfig, Matcher};
use crate::event::{Category, Event, EventType, Level, StaticTags};

/// Categorisation: rules that tag events with categories, or drop them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoriseConfig {
    /// The rules, all evaluated; the categories of every matching rule are added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleConfig>,
    /// Categories given to an event that no rule matched (e.g.
    /// `{ qs_log_category = "unknown" }`). Empty: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub default_categories: BTreeMap<String, String>,
}

/// One categorisation rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// What the rule is for (shown in logs only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Event types the rule applies to; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<EventType>,
    /// Levels the rule applies to (`FATAL` included); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<Level>,
    /// Message filters; the rule matches when any matches. Empty: every message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterConfig>,
    /// Further conditions, as in a sink's `match` table (task and app names,
    /// users, hosts, ...); all must hold. Empty: none.
    #[serde(
        default,
        rename = "match",
        skip_serializing_if = "MatchConfig::is_empty"
    )]
    pub match_: MatchConfig,
    /// `categorise` (default) adds `categories`; `drop` discards the event.
    #[serde(default)]
    pub action: RuleAction,
    /// Categories to add, name → value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub categories: BTreeMap<String, String>,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Add the rule's categories.
    #[default]
    Categorise,
    /// Drop the event (counted as an intentional drop).
    Drop,
}

/// One message filter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// How `value` is compared with the message.
    #[serde(rename = "type")]
    pub kind: FilterKind,
    /// The text or regular expression.
    pub value: String,
}

/// How a filter compares (case-sensitive, like Butler SOS's `sw`/`ew`/`so`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterKind {
    /// The message starts with the value (Butler SOS `sw`).
    #[serde(alias = "sw")]
    StartsWith,
    /// The message ends with the value (Butler SOS `ew`).
    #[serde(alias = "ew")]
    EndsWith,
    /// The message contains the value (Butler SOS `so`).
    #[serde(alias = "so")]
    Contains,
    /// The message matches the regular expression.
    Regex,
}

/// A regular expression in a rule that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("categorise.rules[{rule}].filters[{filter}]: invalid regex {value:?}")]
pub struct BadRegex {
    /// Index of the rule.
    pub rule: usize,
    /// Index of the filter in the rule.
    pub filter: usize,
    /// The expression.
    pub value: String,
    /// Why it does not compile.
    #[source]
    pub source: regex::Error,
}

#[derive(Debug, Clone)]
enum Filter {
    StartsWith(String),
    EndsWith(String),
    Contains(Box<Finder<'static>>),
    Regex(Regex),
}

impl Filter {
    fn matches(&self, message: &str) -> bool {
        match self {
            Filter::StartsWith(value) => message.starts_with(value.as_str()),
            Filter::EndsWith(value) => message.ends_with(value.as_str()),
            Filter::Contains(finder) => finder.find(message.as_bytes()).is_some(),
            Filter::Regex(regex) => regex.is_match(message),
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    types: Vec<EventType>,
    levels: Vec<Level>,
    filters: Vec<Filter>,
    matcher: Matcher,
    action: RuleAction,
    categories: Vec<Category>,
}

/// What categorisation decided for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the event (categories, if any, were added).
    Keep,
    /// A `drop` rule matched.
    Drop,
}

/// What every parsed event gets before routing, whether it came from a socket
/// or from a replayed dead letter: the static `[tags]`, then categorisation.
#[derive(Debug, Clone, Default)]
pub struct Enricher {
    tags: Option<StaticTags>,
    categoriser: Categoriser,
}

impl Enricher {
    /// Compiles the rules and shares the tags.
    ///
    /// # Errors
    ///
    /// When a regex filter does not compile.
    pub fn new(
        tags: &BTreeMap<String, String>,
        categorise: &CategoriseConfig,
    ) -> Result<Enricher, BadRegex> {
        Ok(Enricher {
            tags: (!tags.is_empty()).then(|| Arc::new(tags.clone())),
            categoriser: Categoriser::new(categorise)?,
        })
    }

    /// Tags and categorises `event`; says whether to keep it.
    pub fn apply(&self, event: &mut Event) -> Verdict {
        event.tags.clone_from(&self.tags);
        if self.categoriser.is_empty() {
            return Verdict::Keep;
        }
        self.categoriser.apply(event)
    }
}

/// Compiled categorisation rules.
#[derive(Debug, Clone, Default)]
pub struct Categoriser {
    rules: Vec<Rule>,
    default_categories: Vec<Category>,
}

impl Categoriser {
    /// Compiles the rules.
    ///
    /// # Errors
    ///
    /// When a regex filter does not compile.
    pub fn new(config: &CategoriseConfig) -> Result<Categoriser, BadRegex> {
        let categories = |map: &BTreeMap<String, String>| -> Vec<Category> {
            map.iter()
                .map(|(name, value)| (Arc::from(name.as_str()), Arc::from(value.as_str())))
                .collect()
        };
        let mut rules = Vec::with_capacity(config.rules.len());
        for (rule_index, rule) in config.rules.iter().enumerate() {
            let mut filters = Vec::with_capacity(rule.filters.len());
            for (filter_index, filter) in rule.filters.iter().enumerate() {
                filters.push(match filter.kind {
                    FilterKind::StartsWith => Filter::StartsWith(filter.value.clone()),
                    FilterKind::EndsWith => Filter::EndsWith(filter.value.clone()),
                    FilterKind::Contains => Filter::Contains(Box::new(
                        Finder::new(filter.value.as_bytes()).into_owned(),
                    )),
                    FilterKind::Regex => {
                        Filter::Regex(Regex::new(&filter.value).map_err(|source| BadRegex {
                            rule: rule_index,
                            filter: filter_index,
                            value: filter.value.clone(),
                            source,
                        })?)
                    }
                });
            }
            rules.push(Rule {
                types: rule.types.clone(),
                levels: rule.levels.clone(),
                filters,
                matcher: Matcher::new(&rule.match_),
                action: rule.action,
                categories: categories(&rule.categories),
            });
        }
        Ok(Categoriser {
            rules,
            default_categories: categories(&config.default_categories),
        })
    }

    /// Whether there is anything to do (lets the hot path skip the call).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.default_categories.is_empty()
    }

    /// Applies the rules to `event`, adding categories; says whether to keep it.
    pub fn apply(&self, event: &mut Event) -> Verdict {
        let mut matched = false;
        for rule in &self.rules {
            let applies = (rule.types.is_empty() || rule.types.contains(&event.event_type))
                && (rule.levels.is_empty()
                    || event.level.is_some_and(|l| rule.levels.contains(&l)))
                && (rule.filters.is_empty()
                    || event
                        .message()
                        .is_some_and(|message| rule.filters.iter().any(|f| f.matches(message))))
                && rule.matcher.matches(event);
            if !applies {
                continue;
            }
            if rule.action == RuleAction::Drop {
                return Verdict::Drop;
            }
            matched = true;
            for category in &rule.categories {
                if !event.categories.contains(category) {
                    event.categories.push(category.clone());
                }
            }
        }
        if !matched {
            event
                .categories
                .extend(self.default_categories.iter().cloned());
        }
        Verdict::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::test_events::{PROXY_WARN, TASK_FAILED, event};

    fn categoriser(toml: &str) -> Categoriser {
        Categoriser::new(&toml::from_str(toml).unwrap()).unwrap()
    }

    #[test]
    fn matching_rules_add_their_categories_once() {
        let rules = categoriser(
            r#"
default_categories = { qs_log_category = "unknown" }
[[rules]]
levels = ["WARN", "ERROR"]
categories = { qs_log_category = "access-denied" }
filters = [{ type = "sw", value = "Access was denied" }, { type = "contains", value = "denied" }]
[[rules]]
filters = [{ type = "regex", value = "User: '[^']+'" }]
categories = { qs_log_category = "access-denied", team = "security" }
"#,
        );
        let mut proxy = event(PROXY_WARN);
        assert_eq!(rules.apply(&mut proxy), Verdict::Keep);
        let names: Vec<_> = proxy
            .categories
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        assert_eq!(names, ["qs_log_category=access-denied", "team=security"]);
    }

    #[test]
    fn unmatched_events_get_the_default_categories() {
        let rules = categoriser(
            r#"
default_categories = { qs_log_category = "unknown" }
[[rules]]
levels = ["FATAL"]
categories = { qs_log_category = "fatal" }
"#,
        );
        let mut proxy = event(PROXY_WARN);
        rules.apply(&mut proxy);
        assert_eq!(proxy.categories.len(), 1);
        assert_eq!(&*proxy.categories[0].1, "unknown");
    }

    #[test]
    fn drop_rule_really_drops() {
        let rules = categoriser(
            r#"
[[rules]]
action = "drop"
filters = [{ type = "ends_with", value = "reached" }]
"#,
        );
        assert_eq!(rules.apply(&mut event(TASK_FAILED)), Verdict::Drop);
        assert_eq!(rules.apply(&mut event(PROXY_WARN)), Verdict::Keep);
    }

    #[test]
    fn bad_regex_names_rule_and_filter() {
        let config: CategoriseConfig =
            toml::from_str("[[rules]]\nfilters = [{ type = \"regex\", value = \"(\" }]").unwrap();
        let err = Categoriser::new(&config).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("categorise.rules[0].filters[0]")
        );
    }

    #[test]
    fn rules_can_match_on_tasks_apps_and_users() {
        let rules = categoriser(
            r#"
[[rules]]
match = { app_names = ["Test failing*"], exclude_users = ["sa_*"] }
categories = { team = "finance" }
[[rules]]
match = { users = ["LAB\\jdoe"] }
action = "drop"
"#,
        );
        let mut task = crate::send::sample_event("task-failed");
        assert_eq!(rules.apply(&mut task), Verdict::Keep);
        assert_eq!(task.categories.len(), 1);
        assert_eq!(&*task.categories[0].1, "finance");
        let mut other = event(PROXY_WARN);
        assert_eq!(rules.apply(&mut other), Verdict::Drop);
    }
}
