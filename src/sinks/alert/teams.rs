//! The `teams` sink: Microsoft Teams through a Power Automate "Workflows"
//! webhook (the Office 365 connectors are retired), posting an Adaptive Card
//! built from serde values. Workflows answer `202 Accepted`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Notifier, Rendered, cut};
use crate::event::Event;
use crate::secret::Secret;
use crate::sinks::SinkError;
use crate::sinks::transport;

/// Settings of a `teams` sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsConfig {
    /// The workflow's HTTP trigger URL (a secret: use `${TEAMS_WEBHOOK_URL}`).
    pub webhook_url: Secret,
    /// Whole-request timeout, in milliseconds.
    #[serde(default = "transport::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra CA certificates (PEM) to trust. Verification is always on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
}

/// Longest text block sent (Teams cards stay readable and under size limits).
const TEXT_MAX: usize = 8000;

/// The Workflows message carrying one Adaptive Card.
pub fn card(rendered: &Rendered) -> serde_json::Value {
    let facts: Vec<serde_json::Value> = rendered
        .text
        .lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(title, value)| json!({ "title": title, "value": cut(value, TEXT_MAX) }))
        .collect();
    let mut body = vec![json!({
        "type": "TextBlock",
        "size": "Large",
        "weight": "Bolder",
        "wrap": true,
        "text": cut(&rendered.title, 500),
    })];
    if facts.is_empty() {
        body.push(
            json!({ "type": "TextBlock", "wrap": true, "text": cut(&rendered.text, TEXT_MAX) }),
        );
    } else {
        body.push(json!({ "type": "FactSet", "facts": facts }));
    }
    let actions: Vec<serde_json::Value> = rendered
        .links
        .iter()
        .map(|(label, url)| json!({ "type": "Action.OpenUrl", "title": label, "url": url }))
        .collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": actions,
            }
        }]
    })
}

/// Posts alerts to a Teams workflow.
#[derive(Debug)]
pub struct Teams {
    client: reqwest::Client,
    url: Secret,
}

impl Teams {
    /// Builds the client (no I/O).
    ///
    /// # Errors
    ///
    /// When the TLS settings are unusable.
    pub fn new(config: &TeamsConfig) -> Result<Teams, String> {
        let client = transport::client(config.timeout_ms, config.tls_ca_file.as_deref())?;
        Ok(Teams {
            client,
            url: config.webhook_url.clone(),
        })
    }
}

impl Notifier for Teams {
    async fn notify(&mut self, _event: &Event, rendered: &Rendered) -> Result<(), SinkError> {
        let body = serde_json::to_vec(&card(rendered))
            .map_err(|err| SinkError::permanent(err.to_string()))?;
        transport::post_json(&self.client, &self.url, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_card_has_a_title_facts_and_link_actions() {
        let rendered = Rendered {
            title: "🔴 Reload task failed: Sales \"daily\"".into(),
            text: "Task: Sales \"daily\"\nHost: pro2-win1\nMessage: C:\\path; O'Brien".into(),
            links: vec![("App".into(), "https://sense/sense/app/x".into())],
        };
        let value = card(&rendered);
        let content = &value["attachments"][0]["content"];
        assert_eq!(content["type"], "AdaptiveCard");
        assert_eq!(
            content["body"][0]["text"],
            "🔴 Reload task failed: Sales \"daily\""
        );
        assert_eq!(content["body"][1]["facts"][2]["value"], "C:\\path; O'Brien");
        assert_eq!(content["actions"][0]["url"], "https://sense/sense/app/x");
    }
}
