//! The `email` sink (being written).

use serde::{Deserialize, Serialize};

use super::{Notifier, Rendered};
use crate::event::Event;
use crate::sinks::SinkError;

/// Settings of a `email` sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {}

/// Sends alerts over email.
#[derive(Debug)]
pub struct Email {}

impl Email {
    /// Builds the sender.
    ///
    /// # Errors
    ///
    /// When the settings are unusable.
    pub fn new(_config: &EmailConfig) -> Result<Email, String> {
        Err("the email sink is being written".into())
    }
}

impl Notifier for Email {
    async fn notify(&mut self, _event: &Event, _rendered: &Rendered) -> Result<(), SinkError> {
        Err(SinkError::permanent("the email sink is being written"))
    }
}

/// Checks the server can be reached with these settings.
///
/// # Errors
///
/// What is wrong and how to fix it.
pub async fn check_connection(_config: &EmailConfig) -> Result<String, String> {
    Err("the email sink is being written".into())
}
