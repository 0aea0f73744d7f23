//! Errors: each names the file, the field (`process.user.uid`), the value found there and what
//! is expected instead.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not a regular file, or is larger than a configuration ever is.
    #[error("{}: {message}", file.display())]
    File {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The file is not JSON.
    #[error("{}:{line}:{column}: not valid JSON: {message}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// Line (from 1).
        line: usize,
        /// Column (from 1).
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// A field has the wrong type, a value out of range, or a value kiln refuses.
    #[error("{}{}: {problem}", file.display(), at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Field {
        /// The file.
        file: PathBuf,
        /// Line and column, when the problem was found while parsing.
        at: Option<(usize, usize)>,
        /// The field, its value and the reason.
        problem: Invalid,
    },
}

impl SpecError {
    /// The refused field, when the error is about one.
    pub fn invalid(&self) -> Option<&Invalid> {
        match self {
            SpecError::Field { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// A refused field: where it is, what it holds and why it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The field's path: `process.user.uid`, `linux.devices[0].path`.
    pub field: String,
    /// The value found, as JSON (absent when the field is missing).
    pub value: Option<String>,
    /// What is wrong and what is expected.
    pub message: String,
}

impl Invalid {
    /// A refusal of `field`, which holds `value` (any JSON-serializable value).
    pub fn new(
        field: impl Into<String>,
        value: &impl serde::Serialize,
        message: impl Into<String>,
    ) -> Self {
        Invalid {
            field: field.into(),
            value: Some(show_value(&serde_json::to_value(value).unwrap_or_default())),
            message: message.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{} = {v}: {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

impl std::error::Error for Invalid {}

/// A value as compact JSON, shortened when long.
pub(crate) fn show_value(v: &serde_json::Value) -> String {
    const MAX: usize = 80;
    let s = v.to_string();
    if s.chars().count() <= MAX {
        s
    } else {
        let short: String = s.chars().take(MAX).collect();
        format!("{short}...")
    }
}
