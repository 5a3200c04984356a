//! The documents a user reads: every link inside the README, BENCHMARKS.md,
//! SECURITY.md, CHANGELOG.md and `docs/` leads somewhere (a heading of the
//! same file, or a file in the repository), the README keeps the order an
//! admin reads it in, and the changelog has an entry for the version being
//! built.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use crate::harness::repo_root;

/// The lines of a Markdown text outside its fenced code blocks.
fn prose(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .scan(false, |fenced, line| {
            if line.starts_with("```") {
                *fenced = !*fenced;
                return Some(None);
            }
            Some((!*fenced).then_some(line))
        })
        .flatten()
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped (but
/// `-` and `_`), spaces as `-`; repeated headings get `-1`, `-2`, ...
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for line in prose(text) {
        let Some(title) = line.trim_start_matches('#').strip_prefix(' ') else {
            continue;
        };
        if !line.starts_with('#') {
            continue;
        }
        let base: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// Every `](target)` of a Markdown text, outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                out.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
    }
    out
}

fn check_links(file: &Path, broken: &mut Vec<String>) {
    let text = fs::read_to_string(file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
    let own = anchors(&text);
    let dir = file.parent().unwrap();
    for link in links(&text) {
        if link.starts_with("http://")
            || link.starts_with("https://")
            || link.starts_with("mailto:")
        {
            continue;
        }
        let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
        let target_text = if path.is_empty() {
            None
        } else {
            let target = dir.join(path);
            if !target.exists() {
                broken.push(format!("{}: {link} (no such file)", file.display()));
                continue;
            }
            fs::read_to_string(&target).ok()
        };
        if anchor.is_empty() {
            continue;
        }
        let known = match &target_text {
            None => own.contains(anchor),
            Some(text) => anchors(text).contains(anchor),
        };
        if !known {
            broken.push(format!("{}: {link} (no such heading)", file.display()));
        }
    }
}

#[test]
fn every_link_in_the_documents_leads_somewhere() {
    let root = repo_root();
    let mut files = vec![
        root.join("README.md"),
        root.join("BENCHMARKS.md"),
        root.join("SECURITY.md"),
        root.join("CHANGELOG.md"),
        root.join("fixtures/README.md"),
    ];
    for entry in fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "md") {
            files.push(path);
        }
    }
    let mut broken = Vec::new();
    for file in &files {
        check_links(file, &mut broken);
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_reads_in_the_order_an_admin_needs_it() {
    let readme = fs::read_to_string(repo_root().join("README.md")).unwrap();
    let order = [
        "## Contents",
        "## Quick start",
        "## Point Qlik Sense at herald",
        "## Install as a service",
        "## Configuration",
        "## Operations",
        "## Performance",
    ];
    let mut last = 0;
    for heading in order {
        let at = readme
            .find(&format!("\n{heading}\n"))
            .unwrap_or_else(|| panic!("no {heading:?} in the README"));
        assert!(at > last, "{heading:?} is out of order");
        last = at;
    }
    // Every section is in the table of contents.
    let contents =
        &readme[readme.find("## Contents").unwrap()..readme.find("## Quick start").unwrap()];
    for line in readme.lines().filter(|line| line.starts_with("## ")) {
        let title = &line[3..];
        if title != "Contents" {
            assert!(
                contents.contains(&format!("[{title}](")),
                "{title:?} is not in the contents"
            );
        }
    }
    // The performance study lives in BENCHMARKS.md, below what a run rewrites.
    let benchmarks = fs::read_to_string(repo_root().join("BENCHMARKS.md")).unwrap();
    let marker = benchmarks
        .find("what follows is kept. -->")
        .expect("BENCHMARKS.md has the marker a benchmark run keeps the study below");
    assert!(benchmarks[marker..].contains("## Performance study"));
    assert!(!readme.contains("## Performance study"));
}

#[test]
fn the_changelog_has_this_version() {
    let changelog = fs::read_to_string(repo_root().join("CHANGELOG.md")).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        changelog.contains(&format!("\n## {version} - ")),
        "CHANGELOG.md has no section for {version}"
    );
    assert!(changelog.contains("Keep a Changelog"));
}
