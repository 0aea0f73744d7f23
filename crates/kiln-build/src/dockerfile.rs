//! The Dockerfile parser: lines, continuations, comments, parser directives, flags, JSON (exec)
//! form and heredocs, following BuildKit's `parser` and `instructions` packages. The result is a
//! list of typed instructions ([`Kind`]) with their line numbers. Everything that does not
//! depend on build variables is checked here, before any step runs: unknown instructions and
//! flags, flags given to the wrong instruction, malformed flag values and missing arguments are
//! errors naming `Dockerfile:line`. Variable expansion happens at build time, because it depends
//! on ARG and ENV scoping.
//!
//! ```
//! use kiln_build::dockerfile::{Kind, parse};
//!
//! let df = parse("Dockerfile", "FROM scratch\nCOPY --chmod=755 tool /bin/\n").unwrap();
//! let Kind::Copy(copy) = &df.instructions[1].kind else { unreachable!() };
//! assert_eq!(df.instructions[1].line, 2);
//! assert!(copy.from.is_none());
//!
//! let err = parse("Dockerfile", "FROM scratch\nCOPY --chmod=abc tool /bin/\n").unwrap_err();
//! assert!(err.to_string().starts_with("Dockerfile:2: COPY --chmod=abc: use an octal mode"));
//! ```

mod flags;
mod instruction;
mod mount;
mod values;

pub(crate) use instruction::is_url;
use instruction::keyword_hint;
pub use instruction::{
    Add, ArgDecl, Args, Check, Copy, Files, From, Healthcheck, Heredoc, KEYWORDS, Kind, Pair, Run,
    Source,
};
pub(crate) use mount::{MountType, RunMount, Sharing, mount_from, parse_mount};
pub(crate) use values::ports;
pub use values::{Checksum, Deferred, FlagValue, Mode, Platform, RunNetwork, RunSecurity};

use crate::error::BuildError;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    /// The escape character (`\` unless an `escape` directive says otherwise).
    pub escape: char,
    /// The instructions, in order.
    pub instructions: Vec<Instruction>,
}

/// One instruction: where it is, its text and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// Line where the instruction starts (1-based).
    pub line: usize,
    /// The text after the keyword and the flags, continuations joined (for cache keys, history
    /// and progress).
    pub text: String,
    /// The typed instruction.
    pub kind: Kind,
}

impl Instruction {
    /// The instruction's keyword, upper-case.
    pub fn keyword(&self) -> &'static str {
        self.kind.keyword()
    }
}

/// Instructions that may carry heredocs (also as the trigger of ONBUILD).
const HEREDOC: &[&str] = &["RUN", "COPY", "ADD"];
/// Parse a Dockerfile. `name` is used in error messages.
pub fn parse(name: &str, text: &str) -> Result<Dockerfile, BuildError> {
    let err = |line: usize, message: String| BuildError::Dockerfile {
        file: name.to_string(),
        line,
        message,
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut escape = '\\';
    let mut i = 0;
    // Parser directives: `# key=value` lines at the very top.
    while i < lines.len() {
        let Some(rest) = lines[i].trim_start().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() || key.contains(char::is_whitespace) {
            break;
        }
        if key == "escape" {
            escape = match value.trim() {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(err(
                        i + 1,
                        format!("invalid escape character {other:?}: use \\ or `"),
                    ));
                }
            };
        }
        i += 1;
    }

    let mut instructions = Vec::new();
    while i < lines.len() {
        let start = i;
        let first = lines[i].trim_start();
        i += 1;
        if first.is_empty() || first.starts_with('#') {
            continue;
        }
        // Join continuation lines; comment and blank lines inside a continuation are dropped.
        let mut joined = String::new();
        let mut current = first.to_string();
        loop {
            match strip_continuation(&current, escape) {
                Some(body) => {
                    joined.push_str(body);
                    // Find the next line that is not a comment or blank.
                    let mut next = None;
                    while i < lines.len() {
                        let l = lines[i];
                        i += 1;
                        let t = l.trim_start();
                        if t.starts_with('#') || t.trim().is_empty() {
                            continue;
                        }
                        next = Some(l.to_string());
                        break;
                    }
                    match next {
                        Some(l) => current = l,
                        None => break,
                    }
                }
                None => {
                    joined.push_str(&current);
                    break;
                }
            }
        }
        let joined = joined.trim().to_string();
        let (word, rest) = split_word(&joined);
        let keyword = word.to_ascii_uppercase();
        if !KEYWORDS.contains(&keyword.as_str()) {
            return Err(err(
                start + 1,
                format!("unknown instruction {word:?}{}", keyword_hint(&keyword)),
            ));
        }
        let (flag_words, rest) = flags::extract(rest);
        let rest = rest.trim();
        let mut heredocs = Vec::new();
        if takes_heredocs(&keyword, rest) {
            for (name, expand, chomp) in heredoc_openers(rest) {
                let mut content = String::new();
                let mut closed = false;
                while i < lines.len() {
                    let l = lines[i];
                    i += 1;
                    let body = if chomp { l.trim_start_matches('\t') } else { l };
                    if body == name {
                        closed = true;
                        break;
                    }
                    content.push_str(body);
                    content.push('\n');
                }
                if !closed {
                    return Err(err(
                        start + 1,
                        format!("heredoc <<{name} is never closed: add a line `{name}`"),
                    ));
                }
                heredocs.push(Heredoc {
                    name,
                    content,
                    expand,
                });
            }
        }
        let kind = instruction::parse(&keyword, &flag_words, rest, heredocs, escape)
            .map_err(|m| err(start + 1, m))?;
        instructions.push(Instruction {
            line: start + 1,
            text: rest.to_string(),
            kind,
        });
    }
    if !instructions.iter().any(|i| matches!(i.kind, Kind::From(_))) {
        return Err(err(
            1,
            "no FROM instruction: a Dockerfile starts with FROM".into(),
        ));
    }
    if let Some(first) = instructions
        .iter()
        .find(|i| !matches!(i.kind, Kind::Arg(_)))
        .filter(|i| !matches!(i.kind, Kind::From(_)))
    {
        return Err(err(
            first.line,
            format!(
                "{} before the first FROM: only ARG may come before FROM",
                first.keyword()
            ),
        ));
    }
    Ok(Dockerfile {
        escape,
        instructions,
    })
}

/// Whether a `keyword` instruction with arguments `rest` reads heredocs: RUN, COPY and ADD (also
/// as ONBUILD triggers), unless in exec (JSON) form.
fn takes_heredocs(keyword: &str, rest: &str) -> bool {
    let own = if keyword == "ONBUILD" {
        let (trigger, args) = split_word(rest);
        HEREDOC.contains(&trigger.to_ascii_uppercase().as_str())
            && !matches!(Args::parse(args.trim()), Args::Exec(_))
    } else {
        HEREDOC.contains(&keyword) && !matches!(Args::parse(rest), Args::Exec(_))
    };
    own && rest.contains("<<")
}

/// If `line` ends with the escape character (ignoring trailing whitespace), the text before it.
fn strip_continuation(line: &str, escape: char) -> Option<&str> {
    line.trim_end_matches([' ', '\t']).strip_suffix(escape)
}

fn split_word(s: &str) -> (&str, &str) {
    match s.find(char::is_whitespace) {
        Some(p) => (&s[..p], &s[p..]),
        None => (s, ""),
    }
}

/// Heredoc openers in `args`: (delimiter, expand, strip leading tabs).
fn heredoc_openers(args: &str) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    let mut rest = args;
    while let Some(p) = rest.find("<<") {
        let mut after = &rest[p + 2..];
        let chomp = after.starts_with('-');
        if chomp {
            after = &after[1..];
        }
        let (quoted, body) = match after.chars().next() {
            Some(q @ ('"' | '\'')) => (Some(q), &after[1..]),
            _ => (None, after),
        };
        let name: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-' || *c == '.')
            .collect();
        let mut consumed = name.len();
        if let Some(q) = quoted {
            if !body[name.len()..].starts_with(q) {
                rest = &rest[p + 2..];
                continue;
            }
            consumed += 1;
        }
        if !name.is_empty() && !name.chars().all(|c| c.is_ascii_digit()) {
            out.push((name.clone(), quoted.is_none(), chomp));
        }
        let skip = p + 2 + usize::from(chomp) + usize::from(quoted.is_some()) + consumed;
        rest = &rest[skip.min(rest.len())..];
    }
    out
}

#[cfg(test)]
mod tests;
