//! What a login on the embedded broker may do: publish for which devices,
//! subscribe to which topics. Plain values and functions, checked when the
//! configuration is read and applied by each connection.
//!
//! * `publish`: globs over device ids (`*` any run of characters, `?` one),
//!   matched against the device a PUBLISH's topic routes to through the
//!   `[[mqtt.topic]]` patterns. `"*"` alone is *any device*, and also allows
//!   topics that name no device (a dispatcher's command topics); a narrower
//!   scope allows only topics that route to one of its devices.
//! * `subscribe`: MQTT topic filters; a SUBSCRIBE filter is granted when
//!   every topic it can match is matched by one of them (`fleet/1/#` is
//!   within `fleet/#`; `#` is within nothing but `#`).
//!
//! `{user}` in either expands to the login's name when the configuration is
//! read, so one line serves every device login: `publish = ["{user}"]`,
//! `subscribe = ["devices/{user}/cmd"]`.

use std::fmt;

use rumqttc::mqttbytes;

use crate::fix::DeviceId;

/// The placeholder for the login's name.
pub const USER: &str = "{user}";

/// Why a scope entry or login name cannot be used; names the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// An empty entry.
    #[error("an empty pattern matches nothing; leave the list empty instead")]
    Empty,
    /// A device pattern with a character no device id has.
    #[error(
        "device pattern {pattern:?}: {bad:?} is in no device id (ids are A-Z a-z 0-9 . _ : -; \
         wildcards are * and ?)"
    )]
    DeviceChar {
        /// The pattern, `{user}` expanded.
        pattern: String,
        /// The character.
        bad: char,
    },
    /// A `{…}` other than `{user}`.
    #[error("{0:?}: the only placeholder is {{user}}")]
    Placeholder(String),
    /// `{user}` where there is no login name (anonymous clients).
    #[error("{0:?}: {{user}} needs a login; anonymous clients have no name")]
    NoUser(String),
    /// Not a valid MQTT topic filter.
    #[error(
        "topic filter {0:?} is not valid: levels are split by /, `+` fills a whole level, `#` \
         only the last one"
    )]
    Filter(String),
    /// A login name that would change the meaning of a pattern it fills.
    #[error(
        "login name {0:?} cannot be used: it must not be empty or hold / + # * ? {{ }} or \
         control characters"
    )]
    Name(String),
}

/// A glob over device ids.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceGlob(String);

impl DeviceGlob {
    /// Checks `pattern` with `{user}` already expanded: only device id
    /// characters and the wildcards, so that a typo cannot silently match
    /// nothing.
    fn new(pattern: String) -> Result<Self, ScopeError> {
        if pattern.is_empty() {
            return Err(ScopeError::Empty);
        }
        if let Some(bad) = pattern
            .chars()
            .find(|&c| !(c == '*' || c == '?' || id_char(c)))
        {
            return Err(ScopeError::DeviceChar { pattern, bad });
        }
        Ok(Self(pattern))
    }

    /// Whether `id` matches.
    pub fn matches(&self, id: &str) -> bool {
        crate::util::pattern::glob_matches(&self.0, id)
    }

    /// The pattern.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DeviceGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// The characters of a device id (see [`DeviceId::new`]).
fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

/// For which devices a login may publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    /// Any device, and topics that name none (`publish = ["*"]`, the
    /// `[mqtt.users]` logins and anonymous clients).
    Any,
    /// Only devices these match; topics that name no device are refused.
    /// Empty: nothing (a login that only subscribes).
    Devices(Vec<DeviceGlob>),
}

/// What a SUBSCRIBE filter gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Within the scope: granted at QoS 0.
    Granted,
    /// A valid filter outside the scope.
    OutOfScope,
    /// Not a valid MQTT topic filter.
    BadFilter,
}

/// One login's scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// For which devices it may publish.
    pub publish: Publish,
    /// The filters it may subscribe within, `{user}` expanded.
    pub subscribe: Vec<String>,
}

impl Scope {
    /// The scope of login `user` from its configured lists (`None`: the
    /// key is absent, and its default applies: `publish = ["{user}"]`,
    /// `subscribe = []`).
    pub fn for_login(
        user: &str,
        publish: Option<&[String]>,
        subscribe: &[String],
    ) -> Result<Self, ScopeError> {
        check_name(user)?;
        let default = [USER.to_owned()];
        let publish = publish.unwrap_or(&default);
        Ok(Self {
            publish: publish_scope(publish, Some(user))?,
            subscribe: filters(subscribe, Some(user))?,
        })
    }

    /// The scope of an `[mqtt.users]` login: any device, no subscriptions
    /// (what such a login could do before scopes existed).
    pub fn legacy() -> Self {
        Self {
            publish: Publish::Any,
            subscribe: Vec::new(),
        }
    }

    /// The scope of anonymous clients (no logins configured): any device,
    /// and the filters of `mqtt.anonymous_subscribe`.
    pub fn anonymous(subscribe: &[String]) -> Result<Self, ScopeError> {
        Ok(Self {
            publish: Publish::Any,
            subscribe: filters(subscribe, None)?,
        })
    }

    /// Whether a PUBLISH may go ahead whose topic routes to `device`
    /// (`None`: the topic names no device).
    pub fn may_publish(&self, device: Option<&DeviceId>) -> bool {
        match (&self.publish, device) {
            (Publish::Any, _) => true,
            (Publish::Devices(globs), Some(d)) => globs.iter().any(|g| g.matches(d.as_str())),
            (Publish::Devices(_), None) => false,
        }
    }

    /// Whether the login may publish for every device.
    pub fn publishes_for_any(&self) -> bool {
        self.publish == Publish::Any
    }

    /// What a SUBSCRIBE to `filter` gets.
    pub fn grant(&self, filter: &str) -> Grant {
        if !filter_ok(filter) {
            Grant::BadFilter
        } else if self.subscribe.iter().any(|allowed| within(filter, allowed)) {
            Grant::Granted
        } else {
            Grant::OutOfScope
        }
    }
}

/// A `publish` list, `{user}` expanded; `"*"` anywhere in it is
/// [`Publish::Any`].
pub fn publish_scope(patterns: &[String], user: Option<&str>) -> Result<Publish, ScopeError> {
    let mut globs = Vec::with_capacity(patterns.len());
    for pattern in patterns {
        let glob = DeviceGlob::new(expand(pattern, user)?)?;
        if glob.as_str() == "*" {
            return Ok(Publish::Any);
        }
        globs.push(glob);
    }
    Ok(Publish::Devices(globs))
}

/// A `subscribe` list, each filter expanded and checked.
pub fn filters(list: &[String], user: Option<&str>) -> Result<Vec<String>, ScopeError> {
    list.iter()
        .map(|f| {
            let filter = expand(f, user)?;
            if filter.is_empty() {
                Err(ScopeError::Empty)
            } else if filter_ok(&filter) {
                Ok(filter)
            } else {
                Err(ScopeError::Filter(filter))
            }
        })
        .collect()
}

/// `text` with every `{user}` replaced by `user`; any other brace is an
/// error, so that a misspelt placeholder is not taken literally.
pub fn expand(text: &str, user: Option<&str>) -> Result<String, ScopeError> {
    let rest = text.replace(USER, "");
    if rest.contains(['{', '}']) {
        return Err(ScopeError::Placeholder(text.to_owned()));
    }
    if !text.contains(USER) {
        return Ok(text.to_owned());
    }
    match user {
        Some(user) => Ok(text.replace(USER, user)),
        None => Err(ScopeError::NoUser(text.to_owned())),
    }
}

/// Login names fill `{user}`: one holding `/`, `+` or `#` would widen a
/// filter (`devices/{user}/cmd` for a login `#` is `devices/#/cmd`), one
/// holding `*` or `?` a device pattern.
pub fn check_name(user: &str) -> Result<(), ScopeError> {
    let bad = |c: char| c.is_control() || matches!(c, '/' | '+' | '#' | '*' | '?' | '{' | '}');
    if user.is_empty() || user.contains(bad) {
        return Err(ScopeError::Name(user.to_owned()));
    }
    Ok(())
}

/// A valid MQTT 3.1.1 topic filter (rumqttc's check, plus U+0000, which
/// MQTT forbids anywhere in a topic).
pub fn filter_ok(filter: &str) -> bool {
    !filter.contains('\0') && mqttbytes::valid_filter(filter)
}

/// Whether every topic `filter` matches is also matched by `allowed` (both
/// valid filters). rumqttc's topic matcher answers exactly this when given
/// the narrower filter in the topic's place: a `+` level of `filter` passes
/// only where `allowed` has `+` or `#`, a `#` only under a `#`, a literal
/// level under the same literal or a wildcard, and a `$` first level under
/// no wildcard (MQTT 3.1.1, 4.7.2).
pub fn within(filter: &str, allowed: &str) -> bool {
    topic_matches(filter, allowed)
}

/// rumqttc's [`mqttbytes::matches`], safe for any topic. That function
/// slices the topic's first byte to look for `$`, which panics when the
/// first character takes more than one byte ("ü/x"); such a topic gets
/// one ASCII level put in front of it and of the filter, which changes no
/// answer (the `$` rule cannot apply to it).
pub fn topic_matches(topic: &str, filter: &str) -> bool {
    match topic.as_bytes().first() {
        Some(b) if !b.is_ascii() => {
            mqttbytes::matches(&format!("_/{topic}"), &format!("_/{filter}"))
        }
        _ => mqttbytes::matches(topic, filter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    #[test]
    fn globs_match_whole_ids() {
        let g = |p: &str| DeviceGlob::new(p.to_owned()).unwrap();
        assert!(g("bus-*").matches("bus-1"));
        assert!(g("bus-*").matches("bus-"));
        assert!(!g("bus-*").matches("xbus-1"));
        assert!(!g("bus-1").matches("bus-12"));
        assert!(g("bus-?").matches("bus-7"));
        assert!(!g("bus-?").matches("bus-17"));
        assert!(g("*-depot-*").matches("van-depot-3"));
        assert!(!g("*-depot-*").matches("van-depot"));
        assert!(g("a*b*c").matches("aXXbYYbZc"));
        assert!(!g("a*b*c").matches("aXXbYYbZ"));
        assert!(g("**").matches(""));
        assert!(g("*").matches("anything.at:all"));
        // Backtracking is linear: a pathological pattern answers at once.
        let long = "a".repeat(64);
        assert!(!g("*a*a*a*a*a*a*a*a*b").matches(&long));
    }

    #[test]
    fn device_patterns_hold_only_id_characters_and_wildcards() {
        assert_eq!(
            DeviceGlob::new("bus 1".into()),
            Err(ScopeError::DeviceChar {
                pattern: "bus 1".into(),
                bad: ' '
            })
        );
        assert!(matches!(
            DeviceGlob::new("fleet/#".into()),
            Err(ScopeError::DeviceChar { bad: '/', .. })
        ));
        assert_eq!(DeviceGlob::new(String::new()), Err(ScopeError::Empty));
    }

    #[test]
    fn user_expands_everywhere_and_other_placeholders_are_errors() {
        assert_eq!(expand("{user}", Some("bus-1")).unwrap(), "bus-1");
        assert_eq!(
            expand("devices/{user}/cmd/{user}", Some("bus-1")).unwrap(),
            "devices/bus-1/cmd/bus-1"
        );
        assert_eq!(expand("fleet/#", None).unwrap(), "fleet/#");
        assert_eq!(
            expand("devices/{device}/cmd", Some("bus-1")),
            Err(ScopeError::Placeholder("devices/{device}/cmd".into()))
        );
        assert_eq!(
            expand("{user", Some("x")),
            Err(ScopeError::Placeholder("{user".into()))
        );
        assert_eq!(
            expand("devices/{user}/cmd", None),
            Err(ScopeError::NoUser("devices/{user}/cmd".into()))
        );
    }

    #[test]
    fn names_that_would_widen_a_pattern_are_refused() {
        for bad in ["", "#", "a/b", "x+", "bus-*", "bus-?", "{user}", "a\nb"] {
            assert_eq!(
                check_name(bad),
                Err(ScopeError::Name(bad.into())),
                "{bad:?}"
            );
        }
        for good in ["bus-1", "jane", "dispatch@depot", "Jane Doe", "ü"] {
            assert_eq!(check_name(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn a_new_login_publishes_for_its_own_device_by_default() {
        let scope = Scope::for_login("bus-1", None, &[]).unwrap();
        assert!(scope.may_publish(Some(&id("bus-1"))));
        assert!(!scope.may_publish(Some(&id("bus-2"))));
        assert!(!scope.may_publish(Some(&id("bus-12"))));
        // A topic that names no device (a command topic) is not its own.
        assert!(!scope.may_publish(None));
        assert!(!scope.publishes_for_any());
        assert_eq!(scope.grant("devices/bus-1/cmd"), Grant::OutOfScope);
    }

    #[test]
    fn publish_lists_take_globs_and_star_means_any() {
        let list = strings(&["bus-*", "{user}.*"]);
        let scope = Scope::for_login("jane", Some(&list), &[]).unwrap();
        assert!(scope.may_publish(Some(&id("bus-3"))));
        assert!(scope.may_publish(Some(&id("jane.phone"))));
        assert!(!scope.may_publish(Some(&id("joe.phone"))));
        let any = strings(&["bus-*", "*"]);
        let scope = Scope::for_login("dispatch", Some(&any), &[]).unwrap();
        assert_eq!(scope.publish, Publish::Any);
        assert!(scope.may_publish(None));
        assert!(scope.publishes_for_any());
        let none = Scope::for_login("screen", Some(&[]), &[]).unwrap();
        assert!(!none.may_publish(Some(&id("screen"))));
        assert_eq!(Scope::legacy().publish, Publish::Any);
    }

    #[test]
    fn subscriptions_are_granted_within_the_scope_only() {
        let subscribe = strings(&["fleet/depot-1/#", "devices/{user}/cmd", "status/+/online"]);
        let scope = Scope::for_login("bus-1", None, &subscribe).unwrap();
        let grants = |f: &str| scope.grant(f);
        assert_eq!(grants("fleet/depot-1/#"), Grant::Granted);
        assert_eq!(
            grants("fleet/depot-1"),
            Grant::Granted,
            "# covers its parent"
        );
        assert_eq!(grants("fleet/depot-1/device/+/fix"), Grant::Granted);
        assert_eq!(grants("fleet/depot-1/device/bus-2/fix"), Grant::Granted);
        assert_eq!(grants("devices/bus-1/cmd"), Grant::Granted);
        assert_eq!(grants("status/bus-9/online"), Grant::Granted);
        assert_eq!(grants("status/+/online"), Grant::Granted);
        // Wider than the scope, or beside it.
        assert_eq!(grants("#"), Grant::OutOfScope);
        assert_eq!(grants("+/depot-1/#"), Grant::OutOfScope);
        assert_eq!(grants("fleet/#"), Grant::OutOfScope);
        assert_eq!(grants("fleet/+/#"), Grant::OutOfScope);
        assert_eq!(grants("fleet/depot-2/#"), Grant::OutOfScope);
        assert_eq!(grants("devices/bus-2/cmd"), Grant::OutOfScope);
        assert_eq!(grants("devices/+/cmd"), Grant::OutOfScope);
        assert_eq!(grants("devices/bus-1/#"), Grant::OutOfScope);
        assert_eq!(grants("devices/bus-1/cmd/x"), Grant::OutOfScope);
        assert_eq!(grants("status/#"), Grant::OutOfScope);
        assert_eq!(grants("status/+/+"), Grant::OutOfScope);
        assert_eq!(grants("$SYS/#"), Grant::OutOfScope);
        assert_eq!(grants("ü/x"), Grant::OutOfScope);
        // Not filters at all.
        assert_eq!(grants(""), Grant::BadFilter);
        assert_eq!(grants("fleet/depot-1/#/x"), Grant::BadFilter);
        assert_eq!(grants("fleet/dep+/#"), Grant::BadFilter);
        assert_eq!(grants("fleet/depot-1/a\0b"), Grant::BadFilter);
    }

    #[test]
    fn only_a_scope_of_hash_grants_hash_and_dollar_topics_stay_apart() {
        let all = Scope::anonymous(&strings(&["#"])).unwrap();
        assert_eq!(all.grant("#"), Grant::Granted);
        assert_eq!(all.grant("a/+/c"), Grant::Granted);
        assert_eq!(all.grant("ü/#"), Grant::Granted);
        assert_eq!(all.grant("$SYS/#"), Grant::OutOfScope);
        let plus = Scope::anonymous(&strings(&["+/#"])).unwrap();
        assert_eq!(plus.grant("#"), Grant::OutOfScope);
        let nothing = Scope::anonymous(&[]).unwrap();
        assert_eq!(nothing.grant("fleet/x"), Grant::OutOfScope);
        assert_eq!(
            Scope::anonymous(&strings(&["devices/{user}/cmd"])),
            Err(ScopeError::NoUser("devices/{user}/cmd".into()))
        );
        assert_eq!(
            Scope::anonymous(&strings(&["a/#/b"])),
            Err(ScopeError::Filter("a/#/b".into()))
        );
    }

    #[test]
    fn topics_match_filters_whatever_their_first_character() {
        assert!(topic_matches(
            "fleet/x/device/bus-1/fix",
            "fleet/+/device/+/fix"
        ));
        assert!(topic_matches("fleet/x", "fleet/#"));
        assert!(topic_matches("fleet", "fleet/#"));
        assert!(!topic_matches("fleet/x", "fleet"));
        assert!(!topic_matches("$SYS/x", "#"));
        // rumqttc's own function panics on these.
        assert!(topic_matches("ü/x", "ü/#"));
        assert!(topic_matches("ü/x", "#"));
        assert!(topic_matches("ü/x", "+/x"));
        assert!(!topic_matches("ü/x", "u/x"));
        assert!(!topic_matches("é", "+/x"));
    }
}
