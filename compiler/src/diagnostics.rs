//! Diagnostics: what the compiler says about its input.
//!
//! An [`Error`] refuses the input; a [`Note`] tells the user something was
//! skipped on purpose. Both name `file:line:column` (1-based) and, when there
//! is one, the field path (`spec.rules[0].when[1].key`), so that every message
//! reads `file:line:column: field.path: message`.

use std::fmt;
use std::sync::Arc;

/// A position in one input file; line and column count from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Something wrong with the input: compilation fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub location: Location,
    /// The field path inside the document, empty for whole-file problems
    /// (a syntax error, an unreadable file).
    pub path: String,
    pub message: String,
}

impl Error {
    pub fn new(location: Location, path: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            location,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.location, self.message)
        } else {
            write!(f, "{}: {}: {}", self.location, self.path, self.message)
        }
    }
}

impl std::error::Error for Error {}

/// Something skipped on purpose (another kind of document, a `targetRefs`
/// policy, a CUSTOM policy under `--skip-custom`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: note: {}", self.location, self.message)
    }
}

/// Every error found in one run, in input order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Errors(pub Vec<Error>);

impl Errors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

impl From<Error> for Errors {
    fn from(e: Error) -> Self {
        Errors(vec![e])
    }
}
