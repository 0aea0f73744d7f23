//! Dockerfile word processing: quotes, the escape character and variable expansion
//! (`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alt}`, `${VAR-default}`, `${VAR+alt}`,
//! `${VAR:?message}`, `${VAR#prefix}`, `${VAR%suffix}`), with BuildKit's rules: single quotes are
//! literal, double quotes expand, an unset variable expands to nothing.

/// The value of `name` among `vars` (the last definition wins).
pub fn lookup<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError(pub String);

/// Split `text` into words on unquoted whitespace, keeping quotes and escapes for `expand`.
pub fn split_words(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match quote {
            None if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                continue;
            }
            None if c == '"' || c == '\'' => quote = Some(c),
            Some(q) if c == q => quote = None,
            _ => {}
        }
        word.push(c);
        if c == escape
            && quote != Some('\'')
            && let Some(n) = chars.next()
        {
            word.push(n);
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Process one word: remove quotes and escapes, expand variables.
pub fn expand(word: &str, vars: &[(String, String)], escape: char) -> Result<String, LexError> {
    let chars: Vec<char> = word.chars().collect();
    let mut lex = Lexer {
        chars: &chars,
        pos: 0,
        vars,
        escape,
    };
    lex.word(&[])
}

/// Expand variables only (no quote removal): used for heredoc bodies.
pub fn expand_heredoc(
    body: &str,
    vars: &[(String, String)],
    escape: char,
) -> Result<String, LexError> {
    let chars: Vec<char> = body.chars().collect();
    let mut lex = Lexer {
        chars: &chars,
        pos: 0,
        vars,
        escape,
    };
    let mut out = String::new();
    while let Some(c) = lex.peek() {
        lex.pos += 1;
        if c == '$' {
            out.push_str(&lex.dollar()?);
        } else if c == escape && lex.peek() == Some('$') {
            lex.pos += 1;
            out.push('$');
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

struct Lexer<'a> {
    chars: &'a [char],
    pos: usize,
    vars: &'a [(String, String)],
    escape: char,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    /// Read until one of `stop` (unquoted) or the end.
    fn word(&mut self, stop: &[char]) -> Result<String, LexError> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if stop.contains(&c) {
                break;
            }
            self.pos += 1;
            match c {
                '\'' => loop {
                    match self.peek() {
                        None => return Err(LexError("unterminated single quote".into())),
                        Some('\'') => {
                            self.pos += 1;
                            break;
                        }
                        Some(q) => {
                            self.pos += 1;
                            out.push(q);
                        }
                    }
                },
                '"' => loop {
                    match self.peek() {
                        None => return Err(LexError("unterminated double quote".into())),
                        Some('"') => {
                            self.pos += 1;
                            break;
                        }
                        Some('$') => {
                            self.pos += 1;
                            out.push_str(&self.dollar()?);
                        }
                        Some(e) if e == self.escape => {
                            self.pos += 1;
                            match self.peek() {
                                Some(n) if n == '"' || n == '$' || n == self.escape => {
                                    self.pos += 1;
                                    out.push(n);
                                }
                                _ => out.push(e),
                            }
                        }
                        Some(q) => {
                            self.pos += 1;
                            out.push(q);
                        }
                    }
                },
                '$' => out.push_str(&self.dollar()?),
                e if e == self.escape => match self.peek() {
                    Some(n) => {
                        self.pos += 1;
                        out.push(n);
                    }
                    None => out.push(e),
                },
                other => out.push(other),
            }
        }
        Ok(out)
    }

    /// A variable name as BuildKit's lexer reads one: a run of digits (a positional
    /// parameter), one of the shell's special parameters (`@ * # ? - $ ! 0`), or letters,
    /// digits and `_`. Positional and special parameters are never set in a Dockerfile, so
    /// they expand to nothing.
    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if c.is_ascii_digit() => {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            Some(c) if is_special_param(c) => {
                self.pos += 1;
                name.push(c);
                return name;
            }
            _ => {}
        }
        while let Some(c) = self.peek() {
            if c.is_alphanumeric() || c == '_' {
                name.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        name
    }

    /// After a `$`: a variable reference, or a literal `$`.
    fn dollar(&mut self) -> Result<String, LexError> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
            }
            Some(c) if c.is_alphanumeric() || c == '_' || is_special_param(c) => {
                let name = self.name();
                return Ok(lookup(self.vars, &name).unwrap_or("").to_string());
            }
            _ => return Ok("$".into()),
        }
        if matches!(self.peek(), Some('{' | '}' | ':')) {
            return Err(LexError(
                "bad substitution: `${` needs a variable name".into(),
            ));
        }
        let name = self.name();
        let value = lookup(self.vars, &name).map(str::to_string);
        let op = self.peek();
        self.pos += 1;
        match op {
            Some('}') => Ok(value.unwrap_or_default()),
            Some(':') => {
                let mode = self.peek();
                self.pos += 1;
                let word = self.word(&['}'])?;
                self.close(&name)?;
                let set = value.as_deref().is_some_and(|v| !v.is_empty());
                Ok(match mode {
                    Some('-') => {
                        if set {
                            value.unwrap_or_default()
                        } else {
                            word
                        }
                    }
                    Some('+') => {
                        if set {
                            word
                        } else {
                            String::new()
                        }
                    }
                    Some('?') if set => value.unwrap_or_default(),
                    Some('?') => {
                        let msg = if word.is_empty() {
                            "is not allowed to be unset".into()
                        } else {
                            word
                        };
                        return Err(LexError(format!("{name}: {msg}")));
                    }
                    _ => {
                        return Err(LexError(format!(
                            "unsupported modifier in ${{{name}:...}}: use :-, :+ or :?"
                        )));
                    }
                })
            }
            Some(m @ ('-' | '+' | '?')) => {
                let word = self.word(&['}'])?;
                self.close(&name)?;
                Ok(match m {
                    '-' => value.unwrap_or(word),
                    '+' => value.map(|_| word).unwrap_or_default(),
                    _ => match value {
                        Some(v) => v,
                        None => return Err(LexError(format!("{name}: {word}"))),
                    },
                })
            }
            Some(m @ ('#' | '%')) => {
                let longest = self.peek() == Some(m);
                if longest {
                    self.pos += 1;
                }
                let pattern = self.word(&['}'])?;
                self.close(&name)?;
                let v = value.unwrap_or_default();
                Ok(trim_pattern(&v, &pattern, m == '#', longest))
            }
            _ => Err(LexError(format!(
                "bad substitution in ${{{name}...}}: expected }}, :-, :+, -, +, #, %"
            ))),
        }
    }

    fn close(&mut self, name: &str) -> Result<(), LexError> {
        if self.peek() == Some('}') {
            self.pos += 1;
            Ok(())
        } else {
            Err(LexError(format!("missing }} after ${{{name}")))
        }
    }
}

/// The shell's special parameters (POSIX 2.5.2) that BuildKit's lexer reads as one-character
/// names after `$`.
fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// `${v#p}`, `${v##p}`, `${v%p}`, `${v%%p}` with shell glob patterns (`*`, `?`).
fn trim_pattern(value: &str, pattern: &str, prefix: bool, longest: bool) -> String {
    let bounds: Vec<usize> = value
        .char_indices()
        .map(|(i, _)| i)
        .chain([value.len()])
        .collect();
    let candidates: Box<dyn Iterator<Item = &usize>> = match (prefix, longest) {
        (true, false) | (false, true) => Box::new(bounds.iter()),
        _ => Box::new(bounds.iter().rev()),
    };
    for &b in candidates {
        let (part, rest) = if prefix {
            (&value[..b], &value[b..])
        } else {
            (&value[b..], &value[..b])
        };
        if glob_match(pattern, part) {
            return rest.to_string();
        }
    }
    value.to_string()
}

fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|i| go(&p[1..], &t[i..])),
            Some('?') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(String, String)> {
        vec![
            ("A".into(), "apple".into()),
            ("EMPTY".into(), String::new()),
            ("P".into(), "/usr/local/bin".into()),
        ]
    }

    fn x(w: &str) -> String {
        expand(w, &vars(), '\\').expect("expand")
    }

    #[test]
    fn expansion_rules() {
        assert_eq!(x("$A"), "apple");
        assert_eq!(x("${A}s"), "apples");
        assert_eq!(x("${B:-banana}"), "banana");
        assert_eq!(x("${EMPTY:-dflt}"), "dflt");
        assert_eq!(x("${EMPTY-dflt}"), "");
        assert_eq!(x("${A:+yes}"), "yes");
        assert_eq!(x("${B:+yes}"), "");
        assert_eq!(x("${EMPTY+set}"), "set");
        assert_eq!(x("${B:-${A}}"), "apple");
        assert_eq!(x("'$A'"), "$A");
        assert_eq!(x("\"$A b\""), "apple b");
        assert_eq!(x("\\$A"), "$A");
        assert_eq!(x("a\\ b"), "a b");
        assert_eq!(x("\"a\\\"b\""), "a\"b");
        assert_eq!(x("$"), "$");
        assert_eq!(x("cost $5"), "cost ");
        assert_eq!(x("${P#*/}"), "usr/local/bin");
        assert_eq!(x("${P##*/}"), "bin");
        assert_eq!(x("${P%/*}"), "/usr/local");
        assert_eq!(x("${P%%/l*}"), "/usr");
        assert!(expand("${B:?must be set}", &vars(), '\\').is_err());
        assert!(expand("${A", &vars(), '\\').is_err());
        assert!(expand("'open", &vars(), '\\').is_err());
    }

    #[test]
    fn special_parameters_expand_to_nothing() {
        // As BuildKit's lexer: `$` then digits or one of `@*#?-$!0` names a parameter that a
        // Dockerfile never sets.
        for w in [
            "$1", "$@", "$*", "$#", "$?", "$$", "$!", "$-", "$0", "${1}", "${@}", "${#}",
        ] {
            assert_eq!(x(w), "", "{w}");
        }
        assert_eq!(x("$12x"), "x");
        assert_eq!(x("$$A"), "A");
        assert_eq!(x("a$-b"), "ab");
        assert_eq!(x("\"$@|$1\""), "|");
        assert_eq!(x("${1:-one}"), "one");
        assert_eq!(x("${@-at}"), "at");
        assert_eq!(x("${#+x}"), "");
        assert_eq!(x("$%"), "$%");
        assert_eq!(x("$ a"), "$ a");
        assert!(expand("${#A}", &vars(), '\\').is_err());
        assert!(expand("${}", &vars(), '\\').is_err());
        assert!(expand("${:-x}", &vars(), '\\').is_err());
    }

    #[test]
    fn other_escape_character() {
        assert_eq!(expand("C:\\dir`$A", &vars(), '`').expect("x"), "C:\\dir$A");
    }

    #[test]
    fn words_split_outside_quotes() {
        assert_eq!(
            split_words("a=1 b=\"two words\" c='x y'  d\\ e", '\\'),
            vec!["a=1", "b=\"two words\"", "c='x y'", "d\\ e"]
        );
    }

    #[test]
    fn heredoc_expansion_keeps_quotes() {
        assert_eq!(
            expand_heredoc("echo \"$A\" '${B:-b}' \\$A\n", &vars(), '\\').expect("x"),
            "echo \"apple\" 'b' $A\n"
        );
    }

    proptest::proptest! {
        #[test]
        fn expansion_never_panics(s in "([$\\{}:+\\-#%?'\"\\\\ a-zA-Z_]){0,60}") {
            let _ = expand(&s, &vars(), '\\');
            let _ = expand(&s, &vars(), '`');
            let _ = expand_heredoc(&s, &vars(), '\\');
            let _ = split_words(&s, '\\');
        }

        #[test]
        fn plain_words_expand_to_themselves(s in "[a-zA-Z0-9_./-]{0,40}") {
            proptest::prop_assert_eq!(expand(&s, &vars(), '\\').expect("plain"), s);
        }
    }
}
