//! Problems found in a configuration file and where they are.

use std::fmt;
use std::ops::Range;

/// One thing wrong with a configuration file.
///
/// Displays as `FILE:LINE:COL: message`, or `FILE: message` for a problem
/// with the file as a whole, the form editors and CI logs turn into links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file name given to [`parse`](super::parse) or the path given to [`load`](super::load).
    pub file: String,
    /// 1-based line; `None` when the problem is with the whole file.
    pub line: Option<usize>,
    /// 1-based column, counted in characters; `None` exactly when `line` is.
    pub col: Option<usize>,
    /// What is wrong, naming the key involved.
    pub message: String,
}

impl Problem {
    /// A problem with the file as a whole, such as not being readable.
    pub(super) fn whole_file(file: String, message: String) -> Self {
        Self {
            file,
            line: None,
            col: None,
            message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.col) {
            (Some(line), Some(col)) => write!(f, "{}:{line}:{col}: {}", self.file, self.message),
            (Some(line), None) => write!(f, "{}:{line}: {}", self.file, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Everything wrong with a configuration file: never empty, in file order.
///
/// Displays one [`Problem`] per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    problems: Vec<Problem>,
}

impl ConfigError {
    /// Wraps the problems found, sorted by position; whole-file problems first.
    pub(super) fn new(mut problems: Vec<Problem>) -> Self {
        debug_assert!(!problems.is_empty(), "a ConfigError needs a problem");
        // Stable, so problems at one position keep the order they were found in.
        problems.sort_by_key(|p| (p.line, p.col));
        Self { problems }
    }

    /// Every problem found.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// Turns byte offsets into the source into 1-based line and column numbers.
pub(super) struct Locator<'s> {
    source: &'s str,
}

impl<'s> Locator<'s> {
    /// A locator for `source`.
    pub(super) fn new(source: &'s str) -> Self {
        Self { source }
    }

    /// The line and column of the start of `span`.
    ///
    /// Columns count characters, not bytes, so they match what an editor shows
    /// for lines with non-ASCII text before the offending key.
    pub(super) fn locate(&self, span: &Range<usize>) -> (usize, usize) {
        let mut end = span.start.min(self.source.len());
        // Parser spans sit on character boundaries; this only guards against a
        // future parser that does not, so that a report never panics.
        while !self.source.is_char_boundary(end) {
            end -= 1;
        }
        let before = &self.source[..end];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }
}
