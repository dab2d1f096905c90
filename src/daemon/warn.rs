//! What the daemon says loudly at start-up about who may reach it: anonymous
//! access beyond loopback, logins that may publish for any device, and
//! deprecated keys.

use crate::config::{Broker, Config};

/// Says loudly at start-up when anyone on the network may post positions,
/// and what the feed's port serves to whom.
pub fn warn_if_open(config: &Config, policy: &crate::access::Policy) {
    if let Broker::Embedded(e) = &config.mqtt.broker {
        warn_if_broker_open(e);
    }
    if config.http.token.is_some() || !config.http.tokens.is_empty() {
        tracing::warn!(
            "http.token and [http.tokens] are deprecated: use [[access.token]] (docs/access.md)"
        );
    }
    if config.feed.listen.ip().is_loopback() {
        return;
    }
    let anonymous = policy.anonymous_scopes();
    if !anonymous.is_empty() {
        tracing::warn!(
            listen = %config.feed.listen,
            scopes = %anonymous,
            "anyone on the network may use these scopes without a token (access.anonymous)"
        );
    } else if policy.tokens() == 0 {
        tracing::warn!(
            listen = %config.feed.listen,
            "no access token is configured and access.anonymous is empty: beyond loopback the feed's port serves only /healthz; add [[access.token]] (fixgate token makes one)"
        );
    }
}

/// The embedded broker's part of [`warn_if_open`]: anonymous clients, what
/// they may read, and logins that may publish for any device, on an
/// address others can reach.
fn warn_if_broker_open(e: &crate::config::Embedded) {
    if e.listen.ip().is_loopback() {
        return;
    }
    if e.logins.is_empty() {
        tracing::warn!(
            listen = %e.listen,
            "the MQTT broker accepts anonymous clients: anyone on the network can publish positions for any device; set [[mqtt.login]] (or [mqtt.users])"
        );
        if !e.anonymous.subscribe.is_empty() {
            tracing::warn!(
                listen = %e.listen,
                filters = ?e.anonymous.subscribe,
                "anonymous MQTT clients may subscribe (mqtt.anonymous_subscribe): anyone on the network can read what is published to these topics"
            );
        }
        return;
    }
    let any: Vec<&str> = e
        .logins
        .iter()
        .filter(|(_, login)| login.scope.publishes_for_any())
        .map(|(user, _)| user.as_str())
        .collect();
    if !any.is_empty() {
        // Names from the configuration, not from clients; still, a long
        // list is cut.
        const SHOWN: usize = 10;
        let more = any.len().saturating_sub(SHOWN);
        tracing::warn!(
            listen = %e.listen,
            logins = ?&any[..any.len().min(SHOWN)],
            more,
            "MQTT logins that may publish for any device: each can spoof every other device's positions; give each device its own [[mqtt.login]] (publish = [\"{{user}}\"] by default), and \"*\" only to a login that needs it"
        );
    }
}
