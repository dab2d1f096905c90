//! rumqttc options for a broker the gateway connects to as a client (the
//! external intake broker, the upstream one): address, keep-alive, login and
//! TLS from [`MqttBroker`]; each user adds its own session settings.

use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use crate::config::MqttBroker;
use crate::tls::{self, ClientCert, TlsError};

/// Options for `broker`, under its configured client id or `default_id`.
/// TLS files are read now, so that a bad path fails at start-up rather than
/// on every reconnect.
pub fn options(
    broker: &MqttBroker,
    default_id: String,
    client_cert: Option<&ClientCert>,
) -> Result<MqttOptions, TlsError> {
    let client_id = broker.client_id.clone().unwrap_or(default_id);
    let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    options.set_keep_alive(broker.keep_alive);
    if let Some(user) = &broker.username {
        options.set_credentials(user.clone(), broker.password.clone().unwrap_or_default());
    }
    if broker.tls {
        let tls = tls::client_config(broker.ca_file.as_deref(), client_cert)?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    Ok(options)
}
