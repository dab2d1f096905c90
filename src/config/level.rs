//! Checks `log.level` without linking `tracing-subscriber` into the config module.
//!
//! Accepted: a comma-separated list of directives, each `LEVEL` or
//! `TARGET=LEVEL`, where LEVEL is one of off, error, warn, info, debug, trace
//! (any case) and TARGET a module path such as `fixgate::sources`. This is a
//! strict subset of `EnvFilter`'s syntax (a test checks that it accepts every
//! string this does). It is deliberately stricter: `EnvFilter` takes a lone
//! word it does not know as a target name, so a misspelt `"inof"` would be
//! accepted and silently log nothing, and it mangles targets after a space.
//! Span and field filters (`[span{field=value}]`) are left to `RUST_LOG`.

/// The level names `EnvFilter` accepts, most severe first.
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
