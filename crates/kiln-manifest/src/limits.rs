//! Limits on manifest input, checked before a YAML parser sees it.
//!
//! Manifests and image labels come from elsewhere (a colleague's repository, a registry), so
//! their size and shape are bounded: a document's size is checked first, then its nesting depth
//! and its number of values in one streaming pass that stops at the first excess, so that its
//! cost is linear in the document's size. Only then does the deserializer run: its parser slows
//! down quadratically with nesting depth, and it holds every value of the document in memory.

use crate::error::Diagnostic;
use yaml_rust2::parser::{Event, Parser};

/// The largest manifest file kiln reads: 1 MiB. Real manifests are a few kilobytes; large
/// contents belong in `files[].source` or in an image.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// The largest `org.mobyproject.config` image label kiln parses: 256 KiB. Real labels are a
/// few hundred bytes.
pub const MAX_LABEL_BYTES: usize = 256 << 10;

/// The deepest nesting of mappings and sequences in a manifest or label: 32 levels. A manifest
/// nests at most seven levels deep (`services[0].resources.blockIO.weightDevice[0].major`).
pub const MAX_DEPTH: usize = 32;

/// The most values (scalars, aliases, sequences and mappings) a manifest or label may hold:
/// 100,000. A large manifest holds a few hundred.
pub const MAX_VALUES: usize = 100_000;

/// The most bytes all `files[].source` files of a build may hold together: 1 GiB. The files
/// section is for configuration; larger payloads belong in an image.
pub const MAX_SOURCE_BYTES: u64 = 1 << 30;

/// The longest container name, in bytes: 240, so that `NNN-NAME` fits in a 255-byte file name.
pub const MAX_NAME_BYTES: usize = 240;

/// The longest `files[].path` or `files[].symlink` target, in bytes (Linux's `PATH_MAX` less
/// the terminating NUL).
pub const MAX_PATH_BYTES: usize = 4095;

/// The longest component of a `files[].path`, in bytes (Linux's `NAME_MAX`).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Human-readable size: `4 MiB`, `256 KiB`, `1 GiB`, or bytes.
pub(crate) fn human(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// What kind of text is checked, for the limit and the advice.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// A manifest file.
    Manifest,
    /// An image label.
    Label,
}

/// Check `text` (named `name` in errors) against the size and depth limits of `kind`.
pub(crate) fn check(name: &str, text: &str, kind: Kind) -> Result<(), Box<Diagnostic>> {
    let (max, what, advice) = match kind {
        Kind::Manifest => (
            MAX_DOCUMENT_BYTES,
            "manifest",
            "move large contents out of the manifest, into a file named by `files[].source` or into an image",
        ),
        Kind::Label => (
            MAX_LABEL_BYTES,
            "label",
            "the image's org.mobyproject.config label is not a sane label; rebuild the image with a smaller one",
        ),
    };
    if text.len() > max {
        let line = text.as_bytes()[..max]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        return Err(Box::new(Diagnostic {
            file: name.to_string(),
            line: Some(line),
            column: None,
            path: String::new(),
            message: format!(
                "this {what} is larger than the limit of {} ({max} bytes); it reaches the limit on this line",
                human(max as u64)
            ),
            help: Some(advice.into()),
        }));
    }
    check_depth(name, text, what)
}

/// Walk the YAML events of `text` and refuse it where it nests deeper than [`MAX_DEPTH`] or
/// holds more than [`MAX_VALUES`] values. The walk stops there, so its cost stays linear in the
/// size of the text.
fn check_depth(name: &str, text: &str, what: &str) -> Result<(), Box<Diagnostic>> {
    let refuse = |line: usize, column: usize, message: String, help: String| {
        Box::new(Diagnostic {
            file: name.to_string(),
            line: Some(line),
            column: Some(column),
            path: String::new(),
            message,
            help: Some(help),
        })
    };
    let too_deep = |line: usize, column: usize| {
        refuse(
            line,
            column,
            format!("this {what} nests deeper than the limit of {MAX_DEPTH} levels"),
            format!(
                "a {what} nests at most a few levels deep (a manifest seven); this one is refused as broken or hostile: flatten the structure that starts here"
            ),
        )
    };
    let mut parser = Parser::new_from_str(text);
    let (mut depth, mut values) = (0usize, 0usize);
    loop {
        let (event, mark) = match parser.next_token() {
            Ok((Event::StreamEnd, _)) => return Ok(()),
            Ok(next) => next,
            Err(_) => break,
        };
        match event {
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep(mark.line(), mark.col() + 1));
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                depth = depth.saturating_sub(1);
                continue;
            }
            Event::Scalar(..) | Event::Alias(..) => {}
            _ => continue,
        }
        values += 1;
        if values > MAX_VALUES {
            return Err(refuse(
                mark.line(),
                mark.col() + 1,
                format!("this {what} holds more than the limit of {MAX_VALUES} values"),
                format!(
                    "a {what} holds at most a few hundred values (scalars, lists and mappings); this one is refused as broken or hostile"
                ),
            ));
        }
    }
    // The text is not YAML this walker reads; the deserializer reports the syntax error with
    // its position. Before it runs, bound the nesting its parser would build: count flow
    // brackets outside quotes and comments, which over-counts only brackets inside block
    // scalars and plain scalars.
    match flow_depth_beyond(text, MAX_DEPTH) {
        Some((line, column)) => Err(too_deep(line, column)),
        None => Ok(()),
    }
}

/// The line and column where `text`'s flow brackets (`[`, `{`), counted outside quoted strings
/// and comments, first nest deeper than `max`.
fn flow_depth_beyond(text: &str, max: usize) -> Option<(usize, usize)> {
    let (mut line, mut column) = (1usize, 0usize);
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        column += 1;
        if c == '\n' {
            line += 1;
            column = 0;
            comment = false;
            prev = c;
            continue;
        }
        if comment {
            continue;
        }
        match (quote, c) {
            (Some('"'), '\\') => {
                chars.next();
                column += 1;
            }
            (Some('\''), '\'') if chars.peek() == Some(&'\'') => {
                chars.next();
                column += 1;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') if prev.is_whitespace() => comment = true,
            (None, '[' | '{') => {
                depth += 1;
                if depth > max {
                    return Some((line, column));
                }
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            (None, _) => {}
        }
        prev = c;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(MAX_DOCUMENT_BYTES as u64), "1 MiB");
        assert_eq!(human(MAX_LABEL_BYTES as u64), "256 KiB");
        assert_eq!(human(MAX_SOURCE_BYTES), "1 GiB");
        assert_eq!(human(1000), "1000 bytes");
    }

    #[test]
    fn flow_depth_ignores_quotes_and_comments() {
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert_eq!(
            flow_depth_beyond(&deep, MAX_DEPTH),
            Some((1, MAX_DEPTH + 1))
        );
        for text in [
            format!("a: \"{deep}\"\n"),
            format!("a: '{deep}'\n"),
            format!("a: 'it''s {deep}'\n"),
            format!("a: \"\\\"{deep}\"\n"),
            format!("a: 1 # {deep}\n"),
        ] {
            assert_eq!(flow_depth_beyond(&text, MAX_DEPTH), None, "{text}");
        }
        assert_eq!(
            flow_depth_beyond(&format!("a: 1\nb: {deep}"), MAX_DEPTH),
            Some((2, 4 + MAX_DEPTH))
        );
    }

    #[test]
    fn depth_at_the_limit_passes_and_beyond_fails() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(check("l", &ok, Kind::Label).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let e = check("l", &deep, Kind::Label).expect_err("too deep");
        assert_eq!((e.line, e.column), (Some(1), Some(MAX_DEPTH + 1)));
    }
}
