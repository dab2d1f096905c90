//! `[gpsd]`: gpsd's JSON protocol for existing GPS tools.
//!
//! The protocol has no authentication, so the feed's rule applies in its
//! strongest form: a `listen` beyond loopback is refused unless
//! `anonymous_network = true` says so, and then only the networks of
//! `allow_from` may connect.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Reader, Section};
use crate::access::DevicePattern;
use crate::access::rate::Net;
use crate::config::Gpsd;

pub(super) const GPSD_KEYS: &[&str] = &[
    "enabled",
    "listen",
    "max_clients",
    "anonymous_network",
    "allow_from",
    "stall_timeout",
    "trackers",
];

impl Reader<'_> {
    pub(super) fn gpsd(&mut self, s: &Section<'_, '_>) -> Gpsd {
        let mut gpsd = Gpsd::default();
        if let Some(on) = self.boolean(s, "enabled") {
            gpsd.enabled = on;
        }
        let listen = self.string(s, "listen");
        if let Some((text, span)) = &listen {
            match text.parse::<SocketAddr>() {
                Ok(addr) => gpsd.listen = addr,
                Err(_) => self.report(
                    span,
                    format!(
                        "{} must be an IP address and port like \"127.0.0.1:2947\" or \"[::1]:2947\", not {text:?}",
                        s.key("listen")
                    ),
                ),
            }
        }
        if let Some(n) = self.integer(s, "max_clients", 1..=10_000) {
            gpsd.max_clients = n;
        }
        if let Some(open) = self.boolean(s, "anonymous_network") {
            gpsd.anonymous_network = open;
        }
        let allow = self.allow_from(s);
        let stall = Duration::from_secs(1)..=Duration::from_secs(600);
        if let Some((d, _)) = self.duration(s, "stall_timeout", stall) {
            gpsd.stall_timeout = d;
        }
        gpsd.trackers = self.trackers(s);
        if !gpsd.listen.ip().is_loopback() && !gpsd.anonymous_network {
            let span = listen.map_or(s.span.clone(), |(_, span)| span);
            self.report(
                &span,
                format!(
                    "{} {} is beyond loopback, and gpsd's protocol has no authentication: set {} = true to serve positions to anyone in {}, or listen on 127.0.0.1",
                    s.key("listen"),
                    gpsd.listen,
                    s.key("anonymous_network"),
                    s.key("allow_from"),
                ),
            );
        }
        if let Some(nets) = allow {
            gpsd.allow_from = nets;
        }
        gpsd
    }

    /// The networks of `allow_from`, when given and all valid.
    fn allow_from(&mut self, s: &Section<'_, '_>) -> Option<Vec<Net>> {
        let span = s.get("allow_from")?.span();
        let items = self.strings(s, "allow_from")?;
        if items.is_empty() {
            self.report(
                &span,
                format!("{} must name at least one network", s.key("allow_from")),
            );
            return None;
        }
        let items_len = items.len();
        let mut nets = Vec::with_capacity(items_len);
        for (text, item) in items {
            match text.parse::<Net>() {
                Ok(net) => nets.push(net),
                Err(why) => self.report(
                    &item,
                    format!(
                        "{} {text:?}: {why} (write an address or a range like \"192.168.1.0/24\")",
                        s.key("allow_from")
                    ),
                ),
            }
        }
        (nets.len() == items_len).then_some(nets)
    }

    fn trackers(&mut self, s: &Section<'_, '_>) -> Vec<DevicePattern> {
        let Some(items) = self.strings(s, "trackers") else {
            return Vec::new();
        };
        let mut patterns = Vec::with_capacity(items.len());
        for (text, span) in items {
            match DevicePattern::parse(&text) {
                Ok(p) => patterns.push(p),
                Err(err) => self.report(&span, format!("{} {text:?}: {err}", s.key("trackers"))),
            }
        }
        patterns
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    fn problems(text: &str) -> Vec<String> {
        match parse(text, "t.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn off_and_on_loopback_by_default() {
        let config = parse("", "t.toml").unwrap();
        assert!(!config.gpsd.enabled);
        assert_eq!(config.gpsd.listen.to_string(), "127.0.0.1:2947");
        let config = parse(
            "[gpsd]\nenabled = true\nmax_clients = 3\nstall_timeout = \"2s\"\ntrackers = [\"bus-*\"]\n",
            "t.toml",
        )
        .unwrap();
        assert!(config.gpsd.enabled);
        assert_eq!(config.gpsd.max_clients, 3);
        assert!(config.gpsd.trackers[0].matches("bus-7"));
        assert!(config.gpsd.allow_from[0].contains([127, 0, 0, 9].into()));
    }

    #[test]
    fn beyond_loopback_only_with_the_opt_in_and_a_network() {
        assert_eq!(
            problems("[gpsd]\nlisten = \"0.0.0.0:2947\"\n"),
            vec![
                "t.toml:2:10: `gpsd.listen` 0.0.0.0:2947 is beyond loopback, and gpsd's protocol has no authentication: set `gpsd.anonymous_network` = true to serve positions to anyone in `gpsd.allow_from`, or listen on 127.0.0.1"
            ]
        );
        let open = "[gpsd]\nlisten = \"[::]:2947\"\nanonymous_network = true\n";
        let config = parse(
            &format!("{open}allow_from = [\"192.168.1.0/24\"]\n"),
            "t.toml",
        )
        .unwrap();
        assert!(config.gpsd.allow_from[0].contains([192, 168, 1, 20].into()));
        assert!(!config.gpsd.allow_from[0].contains([127, 0, 0, 1].into()));
        assert_eq!(
            problems(&format!("{open}allow_from = []\n")),
            vec!["t.toml:4:14: `gpsd.allow_from` must name at least one network"]
        );
        let bad = problems(&format!(
            "{open}allow_from = [\"10.0.0.0/33\"]\ntrackers = [\"bus 1\"]\nlisten2 = 1\n"
        ));
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert!(
            bad[0].starts_with("t.toml:4:15: `gpsd.allow_from` \"10.0.0.0/33\""),
            "{bad:?}"
        );
        assert!(
            bad[1].starts_with("t.toml:5:13: `gpsd.trackers` \"bus 1\""),
            "{bad:?}"
        );
        assert!(
            bad[2].starts_with("t.toml:6:1: unknown key `listen2` in [gpsd]"),
            "{bad:?}"
        );
    }
}
