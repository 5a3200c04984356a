//! The `slack` sink: Slack incoming webhooks, with Block Kit built from serde
//! structs (never by gluing JSON strings), so backslashes, quotes and emoji in
//! task names and messages always arrive intact.
//!
//! Slack answers `200 ok`; `400 invalid_payload` is permanent; `429` carries
//! `Retry-After`, which the driver honours. Text longer than Slack's block limits
//! is cut with a visible `… [cut]` marker.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Notifier, Rendered, cut};
use crate::event::Event;
use crate::secret::Secret;
use crate::sinks::SinkError;
use crate::sinks::transport;

/// Settings of a `slack` sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming-webhook URL (a secret: use `${SLACK_WEBHOOK_URL}`).
    pub webhook_url: Secret,
    /// Whole-request timeout, in milliseconds.
    #[serde(default = "transport::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra CA certificates (PEM) to trust. Verification is always on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
}

/// Slack's limits: header text 150 characters, section text 3000.
const HEADER_MAX: usize = 150;
const SECTION_MAX: usize = 3000;

/// A Slack message.
#[derive(Debug, Serialize)]
pub struct Message<'a> {
    /// Notification text (shown where blocks are not).
    pub text: String,
    /// The layout.
    pub blocks: Vec<Block<'a>>,
}

/// A Block Kit block.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block<'a> {
    /// A bold one-line header.
    Header {
        /// Its text.
        text: Text,
    },
    /// A paragraph.
    Section {
        /// Its text.
        text: Text,
    },
    /// Buttons.
    Actions {
        /// The buttons.
        elements: Vec<Button<'a>>,
    },
}

/// A text object.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Text {
    /// Shown as written.
    PlainText {
        /// The text.
        text: String,
        /// Turn `:emoji:` codes into emoji.
        emoji: bool,
    },
    /// Slack's markup.
    Mrkdwn {
        /// The text (with `&`, `<`, `>` escaped).
        text: String,
    },
}

/// A link button.
#[derive(Debug, Serialize)]
pub struct Button<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: Text,
    url: &'a str,
}

/// Escapes what Slack's mrkdwn treats as markup.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Builds the Slack message for a rendered alert.
pub fn message(rendered: &Rendered) -> Message<'_> {
    let mut blocks = vec![
        Block::Header {
            text: Text::PlainText {
                text: cut(&rendered.title, HEADER_MAX),
                emoji: true,
            },
        },
        Block::Section {
            text: Text::Mrkdwn {
                text: cut(&escape(&rendered.text), SECTION_MAX),
            },
        },
    ];
    if !rendered.links.is_empty() {
        blocks.push(Block::Actions {
            elements: rendered
                .links
                .iter()
                .map(|(label, url)| Button {
                    kind: "button",
                    text: Text::PlainText {
                        text: label.clone(),
                        emoji: false,
                    },
                    url,
                })
                .collect(),
        });
    }
    Message {
        text: cut(&rendered.title, SECTION_MAX),
        blocks,
    }
}

/// Posts alerts to a Slack incoming webhook.
#[derive(Debug)]
pub struct Slack {
    client: reqwest::Client,
    url: Secret,
}

impl Slack {
    /// Builds the client (no I/O).
    ///
    /// # Errors
    ///
    /// When the TLS settings are unusable.
    pub fn new(config: &SlackConfig) -> Result<Slack, String> {
        let client = transport::client(config.timeout_ms, config.tls_ca_file.as_deref())?;
        Ok(Slack {
            client,
            url: config.webhook_url.clone(),
        })
    }
}

impl Notifier for Slack {
    async fn notify(&mut self, _event: &Event, rendered: &Rendered) -> Result<(), SinkError> {
        let body = serde_json::to_vec(&message(rendered))
            .map_err(|err| SinkError::permanent(err.to_string()))?;
        transport::post_json(&self.client, &self.url, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(title: &str, text: &str) -> Rendered {
        Rendered {
            title: title.into(),
            text: text.into(),
            links: vec![("QMC".into(), "https://sense/qmc/tasks".into())],
        }
    }

    #[test]
    fn adversarial_text_stays_valid_json_and_intact() {
        let text = "C:\\ProgramData\\Qlik \"quoted\" O'Brien\r\nline 2 😀 <b>&";
        let json =
            serde_json::to_string(&message(&rendered("Reload of \"Sales\" \\ 😀", text))).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value["blocks"][0]["text"]["text"],
            "Reload of \"Sales\" \\ 😀"
        );
        assert_eq!(
            value["blocks"][1]["text"]["text"],
            "C:\\ProgramData\\Qlik \"quoted\" O'Brien\r\nline 2 😀 &lt;b&gt;&amp;"
        );
        assert_eq!(
            value["blocks"][2]["elements"][0]["url"],
            "https://sense/qmc/tasks"
        );
    }

    #[test]
    fn long_text_is_cut_with_a_visible_marker() {
        let long = "x".repeat(4000);
        let value = serde_json::to_value(message(&rendered(&long, &long))).unwrap();
        let header = value["blocks"][0]["text"]["text"].as_str().unwrap();
        let section = value["blocks"][1]["text"]["text"].as_str().unwrap();
        assert_eq!(header.chars().count(), HEADER_MAX);
        assert_eq!(section.chars().count(), SECTION_MAX);
        assert!(section.ends_with("… [cut]"));
    }
}
