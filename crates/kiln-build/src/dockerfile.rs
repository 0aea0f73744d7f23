//! The Dockerfile parser: lines, continuations, comments, parser directives, flags, JSON (exec)
//! form and heredocs, following BuildKit's `parser` package. The result is a list of raw
//! instructions with their line numbers; variable expansion happens later, at build time, because
//! it depends on ARG and ENV scoping.

use crate::error::BuildError;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    /// The escape character (`\` unless an `escape` directive says otherwise).
    pub escape: char,
    /// The instructions, in order.
    pub instructions: Vec<Instruction>,
}

/// One instruction as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// Line where the instruction starts (1-based).
    pub line: usize,
    /// The instruction keyword, upper-cased (`RUN`, `COPY`, ...).
    pub keyword: String,
    /// Leading `--name[=value]` flags.
    pub flags: Vec<Flag>,
    /// The arguments.
    pub args: Args,
    /// Heredocs opened on the instruction's line, in order.
    pub heredocs: Vec<Heredoc>,
    /// The instruction text after the keyword, continuations joined (for cache keys and history).
    pub text: String,
}

/// A `--name=value` flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    /// Name without the dashes.
    pub name: String,
    /// Value, if `=` was given.
    pub value: Option<String>,
}

/// Arguments in shell form (one string) or exec form (a JSON array).
#[derive(Debug, Clone, PartialEq)]
pub enum Args {
    /// Shell form: the raw text.
    Shell(String),
    /// Exec form: the decoded JSON array.
    Exec(Vec<String>),
}

/// A heredoc (`<<EOF ... EOF`).
#[derive(Debug, Clone, PartialEq)]
pub struct Heredoc {
    /// The delimiter word.
    pub name: String,
    /// The body, each line ending in a newline.
    pub content: String,
    /// Whether variables in the body are expanded (the delimiter was not quoted).
    pub expand: bool,
}

/// Instructions whose arguments may be a JSON array.
const JSON_FORM: &[&str] = &["RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME"];
/// Instructions that take leading `--flags`.
const FLAGGED: &[&str] = &["RUN", "COPY", "ADD", "FROM", "HEALTHCHECK"];
/// Instructions that may carry heredocs.
const HEREDOC: &[&str] = &["RUN", "COPY", "ADD"];
/// Every instruction kiln knows.
pub const KEYWORDS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

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
            let hint = strsim_hint(&keyword);
            return Err(err(
                start + 1,
                format!("unknown instruction {word:?}{hint}"),
            ));
        }
        let mut rest = rest.trim_start();
        let mut flags = Vec::new();
        if FLAGGED.contains(&keyword.as_str()) {
            while let Some(after) = rest.strip_prefix("--") {
                let (word, tail) = split_word(after);
                if word.is_empty() {
                    break;
                }
                let (name, value) = match word.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(unquote_flag(v))),
                    None => (word.to_string(), None),
                };
                flags.push(Flag { name, value });
                rest = tail.trim_start();
            }
        }
        let mut heredocs = Vec::new();
        if HEREDOC.contains(&keyword.as_str()) {
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
        let args = if JSON_FORM.contains(&keyword.as_str()) && rest.starts_with('[') {
            match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) => Args::Exec(v),
                Err(_) => Args::Shell(rest.to_string()),
            }
        } else {
            Args::Shell(rest.to_string())
        };
        if rest.is_empty() && !matches!(keyword.as_str(), "RUN" | "CMD" | "ENTRYPOINT") {
            return Err(err(
                start + 1,
                format!("{keyword} needs at least one argument"),
            ));
        }
        instructions.push(Instruction {
            line: start + 1,
            keyword,
            flags,
            args,
            heredocs,
            text: rest.to_string(),
        });
    }
    if !instructions.iter().any(|i| i.keyword == "FROM") {
        return Err(err(
            1,
            "no FROM instruction: a Dockerfile starts with FROM".into(),
        ));
    }
    if let Some(first) = instructions
        .iter()
        .find(|i| i.keyword != "ARG")
        .filter(|i| i.keyword != "FROM")
    {
        return Err(err(
            first.line,
            format!(
                "{} before the first FROM: only ARG may come before FROM",
                first.keyword
            ),
        ));
    }
    Ok(Dockerfile {
        escape,
        instructions,
    })
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

fn unquote_flag(v: &str) -> String {
    let v = v.trim();
    if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        v[1..v.len() - 1].to_string()
    } else {
        v.to_string()
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

fn strsim_hint(word: &str) -> String {
    KEYWORDS
        .iter()
        .map(|k| (strsim::levenshtein(k, word), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(": did you mean {k}?"))
        .unwrap_or_default()
}

impl Instruction {
    /// The value of flag `name`, if present.
    pub fn flag(&self, name: &str) -> Option<&Flag> {
        self.flags.iter().find(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Instruction {
        let df = parse("Dockerfile", &format!("FROM scratch\n{text}")).expect("parse");
        df.instructions[1].clone()
    }

    #[test]
    fn continuations_comments_and_keywords() {
        let df = parse(
            "Dockerfile",
            "# syntax=docker/dockerfile:1\nFROM alpine AS build\n\nrun echo a \\\n# comment\n  && echo b\nCMD [\"sh\", \"-c\"]\n",
        )
        .expect("parse");
        assert_eq!(df.instructions.len(), 3);
        assert_eq!(df.instructions[1].keyword, "RUN");
        assert_eq!(df.instructions[1].line, 4);
        assert_eq!(
            df.instructions[1].args,
            Args::Shell("echo a   && echo b".into())
        );
        assert_eq!(
            df.instructions[2].args,
            Args::Exec(vec!["sh".into(), "-c".into()])
        );
    }

    #[test]
    fn escape_directive() {
        let df = parse(
            "Dockerfile",
            "# escape=`\nFROM scratch\nCOPY a `\n  C:\\dir\n",
        )
        .expect("parse");
        assert_eq!(df.escape, '`');
        assert_eq!(df.instructions[1].args, Args::Shell("a   C:\\dir".into()));
    }

    #[test]
    fn flags_and_heredocs() {
        let i = one("COPY --from=build --chmod=755 <<EOF /x\nhello $X\nEOF\n");
        assert_eq!(
            i.flag("from").and_then(|f| f.value.clone()),
            Some("build".into())
        );
        assert_eq!(i.flags.len(), 2);
        assert_eq!(i.heredocs.len(), 1);
        assert_eq!(i.heredocs[0].content, "hello $X\n");
        assert!(i.heredocs[0].expand);
        let i = one("RUN <<-'EOT' sh\n\techo $HOME\n\tEOT\n");
        assert_eq!(i.heredocs[0].content, "echo $HOME\n");
        assert!(!i.heredocs[0].expand);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("Dockerfile", "FROM scratch\nCOPPY a b\n").expect_err("bad");
        assert_eq!(
            e.to_string(),
            "Dockerfile:2: unknown instruction \"COPPY\": did you mean COPY?"
        );
        let e = parse("Dockerfile", "RUN true\nFROM scratch\n").expect_err("bad");
        assert!(
            e.to_string()
                .starts_with("Dockerfile:1: RUN before the first FROM")
        );
        let e = parse("Dockerfile", "FROM scratch\nRUN <<EOF\nno end\n").expect_err("bad");
        assert!(e.to_string().contains("never closed"), "{e}");
    }

    #[test]
    fn not_json_falls_back_to_shell() {
        let i = one("RUN [not json\n");
        assert_eq!(i.args, Args::Shell("[not json".into()));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,300}") {
            let _ = parse("fuzz", &s);
        }

        #[test]
        fn parser_never_panics_on_dockerfile_like_text(
            s in "(FROM|RUN|COPY|ADD|ENV|ARG|<<EOF|EOF|--from=|\\[\"|\"\\]|#|\\\\|`|\n| |[a-z$=:{}]){0,80}"
        ) {
            if let Ok(df) = parse("fuzz", &s) {
                proptest::prop_assert!(df.instructions.iter().any(|i| i.keyword == "FROM"));
            }
        }
    }
}
