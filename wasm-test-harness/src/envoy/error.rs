//! The runner's error: which step failed, why, and what Envoy said last.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure of the runner (not of the request under test: a refused request
/// is an [`Observation`](super::Observation), never an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Envoy could be found or installed (`scripts/envoy.sh` failed).
    #[error("finding Envoy: {0}")]
    Install(String),
    /// A file or socket operation failed.
    #[error("{step}: {source}")]
    Io {
        step: String,
        #[source]
        source: std::io::Error,
    },
    /// Making certificates or a TLS configuration failed.
    #[error("certificates: {0}")]
    Certs(String),
    /// A template could not be rendered (an unknown or unfilled placeholder).
    #[error("rendering {template}: {detail}")]
    Template { template: String, detail: String },
    /// Envoy exited, or never became ready, while starting.
    #[error("Envoy did not start ({step}): {detail}{}", LogTail(.log_tail))]
    Start {
        step: String,
        detail: String,
        log_tail: String,
    },
    /// A step that waits on Envoy ran out of time.
    #[error("timed out {step}{}", LogTail(.log_tail))]
    Timeout { step: String, log_tail: String },
    /// The admin interface answered something unexpected.
    #[error("admin {path}: {detail}")]
    Admin { path: String, detail: String },
}

struct LogTail<'a>(&'a str);

impl fmt::Display for LogTail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "\n--- Envoy log (tail) ---\n{}", self.0)
        }
    }
}

impl Error {
    pub(crate) fn io(step: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            step: step.into(),
            source,
        }
    }

    pub(crate) fn certs(detail: impl Into<String>) -> Error {
        Error::Certs(detail.into())
    }

    /// Envoy's log lines that came with this error, if any.
    pub fn log_tail(&self) -> Option<&str> {
        match self {
            Error::Start { log_tail, .. } | Error::Timeout { log_tail, .. } => Some(log_tail),
            _ => None,
        }
    }
}
