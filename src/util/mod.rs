//! Small utilities every part uses, with no knowledge of the data path:
//! back-off, bounded metric labels, log limits, name patterns, secrets,
//! the open-files limit and the MQTT client's options.

pub mod backoff;
pub mod fd_limit;
pub mod labels;
pub mod log_limit;
pub mod mqtt_client;
pub mod pattern;
pub mod secret;
pub mod tasks;
