//! Checks `log.level` without linking `tracing-subscriber` into the config module.
//!
//! Accepted: a comma-separated list of directives, each `LEVEL` or
//! `TARGET=LEVEL`, where LEVEL is one of off, error, warn, info, debug, trace
//! (any case) and TARGET a module path such as `fixgate::sources`. This is a
//! strict subset of the syntax of `tracing-subscriber`'s `Targets`, which the
//! logger uses (a test checks that it takes every string this accepts, at the
//! levels meant). It is deliberately stricter: `Targets` takes a lone
//! word it does not know as a target name, so a misspelt `"inof"` would be
//! accepted and silently log nothing, and it mangles targets after a space.
//! `RUST_LOG` takes the same LEVEL / TARGET=LEVEL list (parsed as `Targets`):
//! span and field filters (`[span{field=value}]`) are not supported.

/// The level names `tracing` accepts, most severe first.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a directive list; the error completes a sentence about `log.level`.
pub(super) fn check(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("is empty; use a level such as \"info\"".to_owned());
    }
    if filter.contains(char::is_whitespace) {
        return Err(format!(
            "{filter:?} contains white space; write directives like \"info,fixgate=debug\""
        ));
    }
    for directive in filter.split(',') {
        let (target, level) = match directive.split_once('=') {
            Some((target, level)) => (Some(target), level),
            None => (None, directive),
        };
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return Err(format!(
                "{level:?} in {filter:?} is not a level; use one of {}",
                LEVELS.join(", ")
            ));
        }
        if let Some(target) = target {
            if !is_module_path(target) {
                return Err(format!(
                    "{target:?} in {filter:?} is not a module path like \"fixgate::sources\""
                ));
            }
        }
    }
    Ok(())
}

/// `a::b_c::d`: non-empty segments of ASCII letters, digits and `_`.
fn is_module_path(target: &str) -> bool {
    target.split("::").all(|segment| {
        !segment.is_empty()
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::filter::Targets;

    #[test]
    fn every_accepted_list_is_one_the_logger_takes_at_the_levels_meant() {
        let cases: [(&str, &str, Option<Level>); 6] = [
            ("info", "fixgate::store", Some(Level::INFO)),
            ("WARN", "sled", Some(Level::WARN)),
            ("off", "fixgate", None),
            ("warn,fixgate=debug", "fixgate::sources", Some(Level::DEBUG)),
            ("warn,fixgate=debug", "sled::pagecache", Some(Level::WARN)),
            ("error,fixgate::sources=trace,sled=off", "sled", None),
        ];
        for (list, target, want) in cases {
            assert_eq!(super::check(list), Ok(()), "{list}");
            let targets: Targets = list.parse().unwrap_or_else(|e| panic!("{list}: {e}"));
            let got = [
                Level::TRACE,
                Level::DEBUG,
                Level::INFO,
                Level::WARN,
                Level::ERROR,
            ]
            .into_iter()
            .find(|level| targets.would_enable(target, level));
            assert_eq!(got, want, "{list} for {target}");
        }
    }

    #[test]
    fn a_misspelt_level_or_white_space_is_refused() {
        for list in [
            "inof",
            "info, fixgate=debug",
            "",
            "fixgate=loud",
            "a::=info",
        ] {
            assert!(super::check(list).is_err(), "{list}");
        }
    }
}
