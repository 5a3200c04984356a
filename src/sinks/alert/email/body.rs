//! What a message says: the one-line subject, the plain-text body (the alert
//! text, then its links) and the HTML body (a table of the alert's `Key: value`
//! lines, everything escaped). It does not build the MIME message or send it.

use super::super::{Rendered, cut};

/// Longest subject, in characters (longer ones are cut with a visible marker).
pub(super) const SUBJECT_MAX: usize = 250;

/// The subject for an alert: one line, at most [`SUBJECT_MAX`] characters.
pub(super) fn subject_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    cut(&line, SUBJECT_MAX)
}

/// The plain-text body: the alert text, then the links one per line.
pub fn text_body(rendered: &Rendered) -> String {
    let mut body = rendered.text.clone();
    if !rendered.links.is_empty() {
        body.push_str("\n\n");
        for (label, url) in &rendered.links {
            body.push_str(label);
            body.push_str(": ");
            body.push_str(url);
            body.push('\n');
        }
    }
    body
}

/// Escapes text for HTML content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `Key: value` when the line looks like one (a short label of words).
fn key_value(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(": ")?;
    let label_like = !key.is_empty()
        && key.chars().count() <= 30
        && key.starts_with(|c: char| c.is_alphabetic())
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.'));
    label_like.then_some((key, value))
}

/// The HTML body: the title, a table of the `Key: value` lines (other lines as
/// paragraphs, in order) and the links. Everything from the alert is escaped.
pub fn html_body(rendered: &Rendered) -> String {
    const CELL: &str = "padding:2px 12px 2px 0;vertical-align:top";
    let mut html = String::with_capacity(rendered.text.len() * 2 + 512);
    html.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>");
    html.push_str(&escape_html(&rendered.title));
    html.push_str("</title></head>\n<body style=\"font-family:sans-serif\">\n<h2>");
    html.push_str(&escape_html(&rendered.title));
    html.push_str("</h2>\n");
    let mut in_table = false;
    for line in rendered.text.lines() {
        let line = line.trim_end_matches('\r');
        match key_value(line) {
            Some((key, value)) => {
                if !in_table {
                    html.push_str("<table style=\"border-collapse:collapse\">\n");
                    in_table = true;
                }
                html.push_str(&format!(
                    "<tr><th style=\"text-align:left;{CELL}\">{}</th><td style=\"white-space:pre-wrap;{CELL}\">{}</td></tr>\n",
                    escape_html(key),
                    escape_html(value)
                ));
            }
            None => {
                if in_table {
                    html.push_str("</table>\n");
                    in_table = false;
                }
                if !line.trim().is_empty() {
                    html.push_str("<p style=\"white-space:pre-wrap\">");
                    html.push_str(&escape_html(line));
                    html.push_str("</p>\n");
                }
            }
        }
    }
    if in_table {
        html.push_str("</table>\n");
    }
    if !rendered.links.is_empty() {
        let links: Vec<String> = rendered
            .links
            .iter()
            .map(|(label, url)| {
                if url.starts_with("https://") || url.starts_with("http://") {
                    format!(
                        "<a href=\"{}\">{}</a>",
                        escape_html(url),
                        escape_html(label)
                    )
                } else {
                    format!("{}: {}", escape_html(label), escape_html(url))
                }
            })
            .collect();
        html.push_str("<p>");
        html.push_str(&links.join(" &middot; "));
        html.push_str("</p>\n");
    }
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::super::testing::rendered;
    use super::*;

    #[test]
    fn html_escapes_markup_and_quotes_and_tabulates_key_value_lines() {
        let html = html_body(&rendered(
            "Reload of \"Sales\" <b>&</b> O'Brien 😀",
            "Task: Reload of <Sales> & \"Co\"\nHost: pro2-win1\nPath: C:\\ProgramData\\Qlik\nfree text <script>alert('x')</script>\nMessage: a: b",
        ));
        assert!(html.contains(
            "<h2>Reload of &quot;Sales&quot; &lt;b&gt;&amp;&lt;/b&gt; O&#39;Brien 😀</h2>"
        ));
        assert!(html.contains(">Task</th><td"), "{html}");
        assert!(
            html.contains(">Reload of &lt;Sales&gt; &amp; &quot;Co&quot;</td>"),
            "{html}"
        );
        assert!(html.contains(">C:\\ProgramData\\Qlik</td>"), "{html}");
        assert!(html.contains(">a: b</td>"), "{html}");
        assert!(
            html.contains("free text &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>"));
        assert!(
            html.contains(
                "<a href=\"https://sense.lab/sense/app/a?b=1&amp;c=&quot;2&quot;\">App</a>"
            )
        );
        assert!(html.contains("<a href=\"https://sense.lab/qmc/tasks\">QMC</a>"));
    }

    #[test]
    fn links_that_are_not_http_are_not_anchors() {
        let html = html_body(&Rendered {
            title: "t".into(),
            text: "x".into(),
            links: vec![("Bad".into(), "javascript:alert(1)".into())],
        });
        assert!(!html.contains("href"), "{html}");
    }

    #[test]
    fn the_text_body_ends_with_the_links() {
        let text = text_body(&rendered("t", "Task: x"));
        assert_eq!(
            text,
            "Task: x\n\nQMC: https://sense.lab/qmc/tasks\nApp: https://sense.lab/sense/app/a?b=1&c=\"2\"\n"
        );
    }

    #[test]
    fn subjects_are_one_line_and_cut_visibly() {
        assert_eq!(subject_line("a\r\nb\tc  d"), "a b c d");
        let long = subject_line(&"x".repeat(1000));
        assert_eq!(long.chars().count(), SUBJECT_MAX);
        assert!(long.ends_with("… [cut]"));
    }
}
