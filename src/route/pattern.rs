//! Name patterns of `match` tables: task and app names, users, qix-perf
//! methods and object types, given exactly or as globs, and compared without
//! regard to case.
//!
//! A pattern is compiled once (folded to lower case, split into what it is);
//! matching allocates nothing. This file knows nothing of events.

use std::fmt;

/// An exact name or a glob: `*` stands for any run of characters (also
/// none), `?` for exactly one; nothing else is special. Letters compare
/// without regard to case (`Finance*` matches `finance - daily reload`).
#[derive(Clone, PartialEq, Eq)]
pub struct NamePattern {
    /// The pattern as configured, for messages.
    text: String,
    /// Its characters, folded.
    folded: Vec<char>,
    /// Whether it has `*` or `?`.
    glob: bool,
}

impl NamePattern {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> NamePattern {
        NamePattern {
            text: pattern.to_string(),
            folded: pattern.chars().map(fold).collect(),
            glob: pattern.contains(['*', '?']),
        }
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        if self.glob {
            glob(&self.folded, name)
        } else {
            name.chars().map(fold).eq(self.folded.iter().copied())
        }
    }
}

impl fmt::Debug for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

/// A user as a `match` table names one: `DIRECTORY\userid` compares with the
/// event's `user_full`, a bare `userid` with its `user_id` in any directory.
/// Both parts may be globs (`LAB\svc_*`, `*\sa_scheduler`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPattern {
    pattern: NamePattern,
    /// Whether the pattern names the directory too.
    qualified: bool,
}

impl UserPattern {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> UserPattern {
        UserPattern {
            pattern: NamePattern::new(pattern),
            qualified: pattern.contains('\\'),
        }
    }

    /// Whether the user given by `user_full` (`DIR\id`) and `user_id` matches.
    pub fn matches(&self, user_full: Option<&str>, user_id: Option<&str>) -> bool {
        let name = if self.qualified { user_full } else { user_id };
        name.is_some_and(|name| self.pattern.matches(name))
    }
}

/// One character folded to lower case (the first character of its lower-case
/// form where that is several, as for `İ`).
fn fold(c: char) -> char {
    if c.is_ascii() {
        c.to_ascii_lowercase()
    } else {
        c.to_lowercase().next().unwrap_or(c)
    }
}

/// Whether `name` matches the folded glob `pattern`: the usual linear-time
/// walk that, on a mismatch, lets the last `*` take one more character.
fn glob(pattern: &[char], name: &str) -> bool {
    // Where in the pattern and (in bytes) in the name.
    let (mut p, mut n) = (0, 0);
    // After the last `*` seen: the pattern index past it, and where in the
    // name it currently stops.
    let mut star: Option<(usize, usize)> = None;
    loop {
        let next = name[n..].chars().next();
        match (pattern.get(p), next) {
            (Some('*'), _) => {
                p += 1;
                star = Some((p, n));
            }
            (Some(&want), Some(c)) if want == '?' || want == fold(c) => {
                p += 1;
                n += c.len_utf8();
            }
            (None, None) => return true,
            _ => {
                // Let the last `*` take one more character, if there is one.
                let Some((after_star, taken_to)) = star else {
                    return false;
                };
                let Some(c) = name[taken_to..].chars().next() else {
                    return false;
                };
                p = after_star;
                n = taken_to + c.len_utf8();
                star = Some((after_star, n));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        NamePattern::new(pattern).matches(name)
    }

    #[test]
    fn exact_names_compare_without_case() {
        assert!(matches("Finance daily", "finance DAILY"));
        assert!(matches("Försäljning", "FÖRSÄLJNING"));
        assert!(!matches("Finance daily", "Finance daily "));
        assert!(!matches("Finance", "Finance daily"));
        assert!(matches("", ""));
        assert!(!matches("", "x"));
    }

    #[test]
    fn globs_match_runs_and_single_characters() {
        assert!(matches("Finance*", "finance - daily reload"));
        assert!(matches("Finance*", "Finance"));
        assert!(matches("*reload*", "Manually triggered reload of Sales"));
        assert!(matches("*", ""));
        assert!(matches("Sales ?", "Sales 2"));
        assert!(!matches("Sales ?", "Sales 12"));
        assert!(matches("a*b*c", "aXXbYYbZZc"));
        assert!(!matches("a*b*c", "aXXbYYbZZ"));
        assert!(matches("*.qvf", "Ä.QVF"));
        assert!(matches("Dashboard ?", "Dashboard Ö"));
        assert!(!matches("[Sales]*", "Sales"));
        assert!(matches("[Sales]*", "[sales] weekly"));
    }

    /// The glob walk against a plain recursive definition, over every pattern
    /// and name built from a small alphabet.
    #[test]
    fn glob_agrees_with_the_recursive_definition() {
        fn reference(p: &[char], n: &[char]) -> bool {
            match (p.first(), n.first()) {
                (None, None) => true,
                (Some('*'), _) => reference(&p[1..], n) || (!n.is_empty() && reference(p, &n[1..])),
                (Some('?'), Some(_)) => reference(&p[1..], &n[1..]),
                (Some(a), Some(b)) => fold(*a) == fold(*b) && reference(&p[1..], &n[1..]),
                _ => false,
            }
        }
        fn all(alphabet: &[char], max: usize) -> Vec<String> {
            let mut out = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..max {
                last = last
                    .iter()
                    .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                    .collect();
                out.extend(last.iter().cloned());
            }
            out
        }
        let mut checked = 0;
        for pattern in all(&['a', 'B', '*', '?'], 4) {
            for name in all(&['A', 'b', 'é'], 4) {
                let p: Vec<char> = pattern.chars().collect();
                let n: Vec<char> = name.chars().collect();
                assert_eq!(
                    matches(&pattern, &name),
                    reference(&p, &n),
                    "{pattern:?} against {name:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 30_000);
    }

    #[test]
    fn users_match_with_or_without_their_directory() {
        let full = Some("LAB\\svc_reload");
        let id = Some("svc_reload");
        assert!(UserPattern::new("lab\\SVC_RELOAD").matches(full, id));
        assert!(UserPattern::new("svc_reload").matches(full, id));
        assert!(UserPattern::new("LAB\\svc_*").matches(full, id));
        assert!(UserPattern::new("*\\svc_reload").matches(full, id));
        assert!(!UserPattern::new("OTHER\\svc_reload").matches(full, id));
        assert!(!UserPattern::new("LAB").matches(full, id));
        assert!(!UserPattern::new("svc_reload").matches(None, None));
    }
}
