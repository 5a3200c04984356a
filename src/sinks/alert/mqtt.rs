//! The `mqtt` sink (being written).

use serde::{Deserialize, Serialize};

use super::{Notifier, Rendered};
use crate::event::Event;
use crate::sinks::SinkError;

/// Settings of a `mqtt` sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {}

/// Sends alerts over mqtt.
#[derive(Debug)]
pub struct Mqtt {}

impl Mqtt {
    /// Builds the sender.
    ///
    /// # Errors
    ///
    /// When the settings are unusable.
    pub fn new(_config: &MqttConfig) -> Result<Mqtt, String> {
        Err("the mqtt sink is being written".into())
    }
}

impl Notifier for Mqtt {
    async fn notify(&mut self, _event: &Event, _rendered: &Rendered) -> Result<(), SinkError> {
        Err(SinkError::permanent("the mqtt sink is being written"))
    }
}

/// Checks the server can be reached with these settings.
///
/// # Errors
///
/// What is wrong and how to fix it.
pub async fn check_connection(_config: &MqttConfig) -> Result<String, String> {
    Err("the mqtt sink is being written".into())
}
