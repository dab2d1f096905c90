//! MQTT topic patterns: which topics to subscribe to, and which device each
//! matching topic belongs to.
//!
//! A pattern is MQTT topic levels separated by `/`. Each level is literal
//! text or one placeholder `{name}` filling the whole level (subscribed as
//! `+`); the last level may be `#` (any remaining levels, captured nowhere).
//! The device id is built from the placeholders by a template such as
//! `{user}.{device}`; without one it is the `{device}` level.
//!
//! ```text
//! fleet/{fleet}/device/{device}/fix      subscribes fleet/+/device/+/fix
//! owntracks/{user}/{device}  + template "{user}.{device}"  →  "jane.phone"
//! ```

use std::fmt;

use crate::fix::{DeviceId, DeviceIdError, GroupId};

/// The template used when none is configured.
const DEFAULT_TEMPLATE: &str = "{device}";

/// Why a topic pattern or device template is not usable; names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is the empty string.
    #[error("topic pattern is empty")]
    Empty,
    /// The pattern starts with `$`, the broker's reserved namespace, which
    /// wildcard subscriptions never see.
    #[error("topic pattern {0:?} starts with `$`, which is reserved for the broker")]
    Reserved(String),
    /// A level holds `+` or `#` other than a whole final `#`.
    #[error(
        "level {level:?} holds the MQTT wildcard `{wildcard}`: write `{{name}}` for a single \
         level, and `#` only as the whole last level"
    )]
    Wildcard {
        /// The offending level.
        level: String,
        /// The wildcard character found.
        wildcard: char,
    },
    /// A level mixes a placeholder with other text, e.g. `dev{device}`.
    #[error("level {0:?}: a placeholder must fill its whole level, such as `{{device}}`")]
    PartialPlaceholder(String),
    /// A placeholder name is not `[a-z_][a-z0-9_]*`.
    #[error(
        "placeholder name {0:?} is invalid: use lower-case letters, digits and `_`, not starting with a digit"
    )]
    BadName(String),
    /// The same placeholder names two levels.
    #[error("placeholder `{{{0}}}` appears more than once in the topic pattern")]
    Duplicate(String),
    /// The device template is the empty string.
    #[error("device template is empty")]
    EmptyTemplate,
    /// The device template has a `{` without its `}` or a `}` without its `{`.
    #[error("device template {0:?} has an unmatched brace")]
    TemplateBrace(String),
    /// The device template uses a placeholder the pattern does not define.
    #[error(
        "device template {template:?} uses `{{{name}}}`, which the topic pattern does not define"
    )]
    UnknownPlaceholder {
        /// The template.
        template: String,
        /// The undefined placeholder name.
        name: String,
    },
    /// Literal text of the template can never be part of a device id.
    #[error("device template {template:?}: text {text:?} cannot be part of a device id: {source}")]
    TemplateText {
        /// The template.
        template: String,
        /// The offending literal text.
        text: String,
        /// Why it is not allowed in an id.
        source: DeviceIdError,
    },
    /// Neither a template nor a `{device}` level says which device a topic is.
    #[error("topic pattern {0:?} has no `{{device}}` level and no device template is given")]
    NoDevice(String),
}

/// One topic level of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    /// Index into [`TopicPattern::names`].
    Capture(usize),
}

/// One piece of a device template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// Index into [`TopicPattern::names`].
    Capture(usize),
}

/// A parsed topic pattern with its device template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    pattern: String,
    levels: Vec<Level>,
    /// The pattern ends in `#`.
    rest: bool,
    names: Vec<String>,
    template: Vec<Piece>,
    /// The device group's template (see [`crate::groups`]), if any.
    group: Option<Vec<Piece>>,
}

impl TopicPattern {
    /// Parses `pattern`; `device_template` defaults to `{device}`.
    pub fn parse(pattern: &str, device_template: Option<&str>) -> Result<Self, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        if pattern.starts_with('$') {
            return Err(PatternError::Reserved(pattern.to_owned()));
        }
        let mut names = Vec::new();
        let (levels, rest) = parse_levels(pattern, &mut names)?;
        let template = match device_template {
            Some(t) => parse_template(t, &names)?,
            None if names.iter().any(|n| n == "device") => {
                parse_template(DEFAULT_TEMPLATE, &names)?
            }
            None => return Err(PatternError::NoDevice(pattern.to_owned())),
        };
        Ok(Self {
            pattern: pattern.to_owned(),
            levels,
            rest,
            names,
            template,
            group: None,
        })
    }

    /// Puts the devices of matching topics in the group `template` builds
    /// (`{fleet}`, `depot-{site}`), under the rules of device ids.
    pub fn with_group(mut self, template: &str) -> Result<Self, PatternError> {
        self.group = Some(parse_template(template, &self.names)?);
        Ok(self)
    }

    /// The group of a topic's device, when the pattern has a group template
    /// and the topic builds a valid name.
    pub fn group_for(&self, topic: &str) -> Option<GroupId> {
        let template = self.group.as_ref()?;
        let captured = self.capture(topic)?;
        GroupId::new(&fill(template, &captured)).ok()
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// The MQTT subscription filter: each placeholder becomes `+`.
    pub fn filter(&self) -> String {
        let mut out: Vec<&str> = self
            .levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Capture(_) => "+",
            })
            .collect();
        if self.rest {
            out.push("#");
        }
        out.join("/")
    }

    /// The device a topic belongs to: `None` if the topic does not match the
    /// pattern, `Some(Err)` if it matches but the built id is not a valid one.
    pub fn device_for(&self, topic: &str) -> Option<Result<DeviceId, DeviceIdError>> {
        let captured = self.capture(topic)?;
        Some(DeviceId::new(&fill(&self.template, &captured)))
    }

    /// The topic level of each placeholder, by index into `names`; `None` if
    /// the topic does not match.
    fn capture<'t>(&self, topic: &'t str) -> Option<Vec<&'t str>> {
        // Wildcards never match the broker's `$` topics (MQTT 3.1.1 §4.7.2).
        if topic.starts_with('$') {
            return None;
        }
        let mut captured = vec![""; self.names.len()];
        let mut parts = topic.split('/');
        for level in &self.levels {
            let part = parts.next()?;
            match level {
                Level::Literal(s) if s == part => {}
                Level::Literal(_) => return None,
                Level::Capture(i) => *captured.get_mut(*i)? = part,
            }
        }
        // `#` also matches its parent level, so nothing left is fine too.
        if !self.rest && parts.next().is_some() {
            return None;
        }
        Some(captured)
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// A template filled with a topic's captured levels.
fn fill(template: &[Piece], captured: &[&str]) -> String {
    let mut text = String::new();
    for piece in template {
        match piece {
            Piece::Literal(s) => text.push_str(s),
            Piece::Capture(i) => text.push_str(captured.get(*i).copied().unwrap_or_default()),
        }
    }
    text
}

/// Splits a pattern into levels, registering placeholder names; also says
/// whether it ends in `#`.
fn parse_levels(
    pattern: &str,
    names: &mut Vec<String>,
) -> Result<(Vec<Level>, bool), PatternError> {
    let parts: Vec<&str> = pattern.split('/').collect();
    let (rest, parts) = match parts.split_last() {
        Some((&"#", init)) => (true, init),
        _ => (false, parts.as_slice()),
    };
    let levels = parts
        .iter()
        .map(|part| parse_level(part, names))
        .collect::<Result<_, _>>()?;
    Ok((levels, rest))
}

/// One level: a whole-level placeholder or literal text without wildcards.
fn parse_level(part: &str, names: &mut Vec<String>) -> Result<Level, PatternError> {
    if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
        check_name(name)?;
        if names.iter().any(|n| n == name) {
            return Err(PatternError::Duplicate(name.to_owned()));
        }
        names.push(name.to_owned());
        return Ok(Level::Capture(names.len() - 1));
    }
    if part.contains(['{', '}']) {
        return Err(PatternError::PartialPlaceholder(part.to_owned()));
    }
    if let Some(wildcard) = part.chars().find(|c| matches!(c, '+' | '#')) {
        return Err(PatternError::Wildcard {
            level: part.to_owned(),
            wildcard,
        });
    }
    Ok(Level::Literal(part.to_owned()))
}

/// Placeholder names are `[a-z_][a-z0-9_]*`.
fn check_name(name: &str) -> Result<(), PatternError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        Ok(())
    } else {
        Err(PatternError::BadName(name.to_owned()))
    }
}

/// Splits a template into literal text and placeholders known to the pattern.
fn parse_template(template: &str, names: &[String]) -> Result<Vec<Piece>, PatternError> {
    if template.is_empty() {
        return Err(PatternError::EmptyTemplate);
    }
    let brace = || PatternError::TemplateBrace(template.to_owned());
    let mut pieces = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        let (text, after) = rest.split_at(rest.find(['{', '}']).unwrap_or(rest.len()));
        if !text.is_empty() {
            pieces.push(template_text(template, text)?);
        }
        rest = match after.strip_prefix('{') {
            None if after.is_empty() => after,
            None => return Err(brace()),
            Some(open) => {
                let (name, tail) = open.split_once('}').ok_or_else(brace)?;
                check_name(name)?;
                let index = names.iter().position(|n| n == name).ok_or_else(|| {
                    PatternError::UnknownPlaceholder {
                        template: template.to_owned(),
                        name: name.to_owned(),
                    }
                })?;
                pieces.push(Piece::Capture(index));
                tail
            }
        };
    }
    Ok(pieces)
}

/// Literal template text, checked now so that a template that can never
/// build a valid id fails at start-up rather than on every message.
fn template_text(template: &str, text: &str) -> Result<Piece, PatternError> {
    DeviceId::new(text).map_err(|source| PatternError::TemplateText {
        template: template.to_owned(),
        text: text.to_owned(),
        source,
    })?;
    Ok(Piece::Literal(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Option<Result<DeviceId, DeviceIdError>> {
        Some(Ok(DeviceId::new(s).unwrap()))
    }

    #[test]
    fn fleet_pattern_subscribes_with_plus_and_takes_the_device_level() {
        let p = TopicPattern::parse("fleet/{fleet}/device/{device}/fix", None).unwrap();
        assert_eq!(p.filter(), "fleet/+/device/+/fix");
        assert_eq!(p.device_for("fleet/north/device/bus-12/fix"), id("bus-12"));
        assert_eq!(p.as_str(), "fleet/{fleet}/device/{device}/fix");
    }

    #[test]
    fn owntracks_pattern_builds_the_id_from_the_template() {
        let p = TopicPattern::parse("owntracks/{user}/{device}", Some("{user}.{device}")).unwrap();
        assert_eq!(p.filter(), "owntracks/+/+");
        assert_eq!(p.device_for("owntracks/jane/phone"), id("jane.phone"));
        // The app's other topics have more levels and are not locations.
        assert_eq!(p.device_for("owntracks/jane/phone/event"), None);
    }

    #[test]
    fn a_group_template_names_the_topics_fleet() {
        let p = TopicPattern::parse("fleet/{fleet}/device/{device}/fix", None)
            .unwrap()
            .with_group("{fleet}")
            .unwrap();
        assert_eq!(
            p.group_for("fleet/north/device/bus-1/fix"),
            Some(GroupId::new("north").unwrap())
        );
        assert_eq!(p.group_for("fleet/no rth/device/bus-1/fix"), None);
        assert_eq!(p.group_for("other/topic"), None);
        assert!(
            TopicPattern::parse("t/{device}", None)
                .unwrap()
                .with_group("{fleet}")
                .is_err()
        );
    }

    #[test]
    fn template_may_mix_literal_text_and_a_constant_id() {
        let p = TopicPattern::parse("t/{a}/{b}", Some("x-{b}:{a}")).unwrap();
        assert_eq!(p.device_for("t/1/2"), id("x-2:1"));
        let p = TopicPattern::parse("boat/nmea", Some("boat")).unwrap();
        assert_eq!(p.filter(), "boat/nmea");
        assert_eq!(p.device_for("boat/nmea"), id("boat"));
    }

    #[test]
    fn trailing_hash_matches_any_rest_including_none() {
        let p = TopicPattern::parse("gps/{device}/#", None).unwrap();
        assert_eq!(p.filter(), "gps/+/#");
        assert_eq!(p.device_for("gps/d1"), id("d1"));
        assert_eq!(p.device_for("gps/d1/a/b"), id("d1"));
        assert_eq!(p.device_for("gps"), None);
    }

    #[test]
    fn non_matching_topics_are_none() {
        let p = TopicPattern::parse("fleet/{fleet}/device/{device}/fix", None).unwrap();
        assert_eq!(p.device_for("fleet/north/device/bus-12"), None);
        assert_eq!(p.device_for("fleet/north/device/bus-12/fix/x"), None);
        assert_eq!(p.device_for("fleet/north/vehicle/bus-12/fix"), None);
        assert_eq!(p.device_for("Fleet/north/device/bus-12/fix"), None);
        let p = TopicPattern::parse("{device}/fix", None).unwrap();
        assert_eq!(p.device_for("$SYS/fix"), None);
    }

    #[test]
    fn empty_levels_are_literals() {
        let p = TopicPattern::parse("/gps//{device}", None).unwrap();
        assert_eq!(p.filter(), "/gps//+");
        assert_eq!(p.device_for("/gps//d1"), id("d1"));
        assert_eq!(p.device_for("gps//d1"), None);
    }

    #[test]
    fn ids_with_forbidden_characters_are_some_err() {
        let p = TopicPattern::parse("gps/{device}", None).unwrap();
        assert_eq!(
            p.device_for("gps/a b"),
            Some(Err(DeviceIdError::BadChar(' ')))
        );
        assert_eq!(p.device_for("gps/"), Some(Err(DeviceIdError::Empty)));
        let long = format!("gps/{}", "x".repeat(65));
        assert_eq!(p.device_for(&long), Some(Err(DeviceIdError::TooLong)));
    }

    #[test]
    fn invalid_patterns_say_what_is_wrong() {
        let err = |p: &str, t: Option<&str>| TopicPattern::parse(p, t).unwrap_err();
        assert_eq!(err("", None), PatternError::Empty);
        assert_eq!(
            err("$SYS/{device}", None),
            PatternError::Reserved("$SYS/{device}".into())
        );
        assert_eq!(
            err("gps/+/{device}", None),
            PatternError::Wildcard {
                level: "+".into(),
                wildcard: '+'
            }
        );
        assert_eq!(
            err("gps/#/{device}", None),
            PatternError::Wildcard {
                level: "#".into(),
                wildcard: '#'
            }
        );
        assert_eq!(
            err("gps/a#/{device}", None),
            PatternError::Wildcard {
                level: "a#".into(),
                wildcard: '#'
            }
        );
        assert_eq!(
            err("gps/dev{device}", None),
            PatternError::PartialPlaceholder("dev{device}".into())
        );
        assert_eq!(
            err("gps/{Device}", None),
            PatternError::BadName("Device".into())
        );
        assert_eq!(err("gps/{}", None), PatternError::BadName(String::new()));
        assert_eq!(err("gps/{1a}", None), PatternError::BadName("1a".into()));
        assert_eq!(
            err("{device}/{device}", None),
            PatternError::Duplicate("device".into())
        );
        assert_eq!(
            err("gps/{id}", None),
            PatternError::NoDevice("gps/{id}".into())
        );
        assert_eq!(err("#", None), PatternError::NoDevice("#".into()));
    }

    #[test]
    fn invalid_templates_say_what_is_wrong() {
        let err = |t: &str| TopicPattern::parse("o/{user}/{device}", Some(t)).unwrap_err();
        assert_eq!(err(""), PatternError::EmptyTemplate);
        assert_eq!(
            err("{user}.{phone}"),
            PatternError::UnknownPlaceholder {
                template: "{user}.{phone}".into(),
                name: "phone".into()
            }
        );
        assert_eq!(err("{user"), PatternError::TemplateBrace("{user".into()));
        assert_eq!(err("user}"), PatternError::TemplateBrace("user}".into()));
        assert_eq!(
            err("{user}/{device}"),
            PatternError::TemplateText {
                template: "{user}/{device}".into(),
                text: "/".into(),
                source: DeviceIdError::BadChar('/')
            }
        );
    }

    #[test]
    fn messages_name_the_offending_part() {
        let msg = |p: &str, t: Option<&str>| TopicPattern::parse(p, t).unwrap_err().to_string();
        assert_eq!(
            msg("gps/dev{device}", None),
            "level \"dev{device}\": a placeholder must fill its whole level, such as `{device}`"
        );
        assert_eq!(
            msg("o/{user}/{device}", Some("{user}.{phone}")),
            "device template \"{user}.{phone}\" uses `{phone}`, which the topic pattern does not define"
        );
        assert!(msg("gps/+", None).contains("`+`"));
    }
}
