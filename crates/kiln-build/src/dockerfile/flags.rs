//! Instruction flags (`--name[=value]` words before the arguments): splitting them off the line
//! the way BuildKit does, and checking them against the flags each instruction accepts.

/// Split the leading `--name[=value]` words off an instruction's arguments, as BuildKit's
/// parser does for every instruction: inside a flag word quotes and backslashes are removed, a
/// bare `--` ends the flags, and the first word that does not start with `--` starts the
/// arguments. Returns the flag words (`--name=value`, unquoted) and the rest of the line.
pub(crate) fn extract(line: &str) -> (Vec<String>, &str) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let rest_at = |i: usize| &line[chars.get(i).map_or(line.len(), |c| c.0)..];
    let mut words = Vec::new();
    let mut word = String::new();
    let mut phase = Phase::Spaces;
    let mut blank_ok = false;
    let mut i = 0;
    loop {
        let at_end = i >= chars.len();
        let mut ch = chars.get(i).map_or('\0', |c| c.1);
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            if ch != '-' || chars.get(i + 1).map(|c| c.1) != Some('-') {
                return (words, rest_at(i));
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        match phase {
            Phase::Word if ch.is_whitespace() => {
                if word == "--" {
                    return (words, rest_at(i));
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                phase = Phase::Spaces;
            }
            Phase::Word if ch == '\'' || ch == '"' => {
                blank_ok = true;
                phase = Phase::Quote(ch);
            }
            Phase::Quote(q) if ch == q => phase = Phase::Word,
            _ => {
                if ch == '\\' {
                    if i + 1 >= chars.len() {
                        phase = Phase::Word;
                        i += 1;
                        continue;
                    }
                    i += 1;
                    ch = chars[i].1;
                }
                word.push(ch);
            }
        }
        i += 1;
    }
    (words, "")
}

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    /// `--name`, `--name=true` or `--name=false`.
    Bool,
    /// `--name=value`, once.
    Value,
    /// `--name=value`, any number of times.
    Values,
}

/// A flag an instruction accepts.
struct Spec {
    name: &'static str,
    ty: Type,
    /// How to write it, for messages (`--chmod=MODE`).
    usage: &'static str,
    /// Why kiln refuses it, for flags BuildKit knows that kiln does not implement.
    refused: Option<&'static str>,
}

const fn flag(name: &'static str, ty: Type, usage: &'static str) -> Spec {
    Spec {
        name,
        ty,
        usage,
        refused: None,
    }
}

const fn refused(name: &'static str, ty: Type, why: &'static str) -> Spec {
    Spec {
        name,
        ty,
        usage: "",
        refused: Some(why),
    }
}

const FROM: &[Spec] = &[flag("platform", Type::Value, "--platform=linux/ARCH")];
const RUN: &[Spec] = &[
    flag("network", Type::Value, "--network=default|none|host"),
    flag("security", Type::Value, "--security=sandbox|insecure"),
    flag("mount", Type::Values, "--mount=type=TYPE,target=PATH[,...]"),
    refused(
        "device",
        Type::Values,
        "kiln does not give RUN steps devices",
    ),
];
const COPY: &[Spec] = &[
    flag("from", Type::Value, "--from=STAGE|IMAGE"),
    flag("chown", Type::Value, "--chown=USER[:GROUP]"),
    flag("chmod", Type::Value, "--chmod=MODE"),
    flag("link", Type::Bool, "--link"),
    refused(
        "parents",
        Type::Bool,
        "kiln does not implement COPY --parents; copy each directory to its destination",
    ),
    refused(
        "exclude",
        Type::Values,
        "kiln does not implement --exclude; list the sources or use .dockerignore",
    ),
];
const ADD: &[Spec] = &[
    flag("chown", Type::Value, "--chown=USER[:GROUP]"),
    flag("chmod", Type::Value, "--chmod=MODE"),
    flag("checksum", Type::Value, "--checksum=sha256:HEX"),
    flag("link", Type::Bool, "--link"),
    refused(
        "keep-git-dir",
        Type::Bool,
        "kiln does not ADD git repositories",
    ),
    refused(
        "exclude",
        Type::Values,
        "kiln does not implement --exclude; list the sources or use .dockerignore",
    ),
    refused(
        "unpack",
        Type::Bool,
        "kiln unpacks local archives and never remote ones, as ADD does by default",
    ),
];
const HEALTHCHECK: &[Spec] = &[
    flag("interval", Type::Value, "--interval=DURATION"),
    flag("timeout", Type::Value, "--timeout=DURATION"),
    flag("start-period", Type::Value, "--start-period=DURATION"),
    flag("start-interval", Type::Value, "--start-interval=DURATION"),
    flag("retries", Type::Value, "--retries=N"),
];

/// The instructions that take flags, and their flags.
const TABLE: &[(&str, &[Spec])] = &[
    ("FROM", FROM),
    ("RUN", RUN),
    ("COPY", COPY),
    ("ADD", ADD),
    ("HEALTHCHECK", HEALTHCHECK),
];

fn specs(keyword: &str) -> &'static [Spec] {
    TABLE
        .iter()
        .find(|(k, _)| *k == keyword)
        .map_or(&[], |(_, s)| *s)
}

/// The flags an instruction was given, checked against what it accepts.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    /// Name and value of each flag given, in order (a bool flag's value is `true` or `false`).
    given: Vec<(&'static str, String)>,
}

impl Flags {
    /// The value of a `Value` flag; `None` when absent or empty (BuildKit treats `--name=` as
    /// not given).
    pub(crate) fn value(&self, name: &str) -> Option<&str> {
        self.given
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The value of a `Value` flag as given, even when empty.
    pub(crate) fn raw(&self, name: &str) -> Option<&str> {
        self.given
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a `Values` flag, in order.
    pub(crate) fn values(&self, name: &str) -> Vec<String> {
        self.given
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Whether a `Bool` flag is on.
    pub(crate) fn on(&self, name: &str) -> bool {
        self.value(name) == Some("true")
    }
}

/// What `keyword` accepts, for messages.
pub(crate) fn accepted(keyword: &str) -> String {
    let list: Vec<&str> = specs(keyword)
        .iter()
        .filter(|s| s.refused.is_none())
        .map(|s| s.usage)
        .collect();
    if list.is_empty() {
        format!("{keyword} takes no flags")
    } else {
        format!("{keyword} accepts {}", list.join(", "))
    }
}

/// Check the flag words of a `keyword` instruction. Errors name the flag and say what the
/// instruction accepts.
pub(crate) fn parse(keyword: &str, words: &[String]) -> Result<Flags, String> {
    let specs = specs(keyword);
    let mut flags = Flags::default();
    for word in words {
        let body = word.strip_prefix("--").unwrap_or(word);
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(spec) = specs.iter().find(|s| s.name == name) else {
            return Err(unknown(keyword, name));
        };
        if let Some(why) = spec.refused {
            return Err(format!("{keyword} --{name}: {why}"));
        }
        if spec.ty != Type::Values && flags.given.iter().any(|(n, _)| *n == name) {
            return Err(format!("{keyword} --{name}: given twice; give it once"));
        }
        let value = match (spec.ty, value) {
            (Type::Bool, None) => "true".to_string(),
            (Type::Bool, Some(v)) if v.eq_ignore_ascii_case("true") => "true".into(),
            (Type::Bool, Some(v)) if v.eq_ignore_ascii_case("false") => "false".into(),
            (Type::Bool, Some(v)) => {
                return Err(format!(
                    "{keyword} --{name}={v}: use --{name}, --{name}=true or --{name}=false"
                ));
            }
            (_, None) => {
                return Err(format!(
                    "{keyword} --{name}: the flag needs a value, as in {}",
                    spec.usage
                ));
            }
            (_, Some(v)) => v.to_string(),
        };
        flags.given.push((spec.name, value));
    }
    Ok(flags)
}

/// The message for a flag `keyword` does not know: whose flag it is, or the nearest one.
fn unknown(keyword: &str, name: &str) -> String {
    let owners: Vec<&str> = TABLE
        .iter()
        .filter(|(k, s)| *k != keyword && s.iter().any(|s| s.name == name))
        .map(|(k, _)| *k)
        .collect();
    let accepts = accepted(keyword);
    if !owners.is_empty() {
        return format!(
            "{keyword} --{name}: --{name} is a flag of {}, not of {keyword}; {accepts}",
            owners.join(" and ")
        );
    }
    let hint = specs(keyword)
        .iter()
        .filter(|s| s.refused.is_none())
        .map(|s| (strsim::levenshtein(s.name, name), s.name))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| format!(" (did you mean --{n}?)"))
        .unwrap_or_default();
    format!("{keyword} --{name}: unknown flag{hint}; {accepts}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(line: &str) -> (Vec<String>, &str) {
        extract(line)
    }

    #[test]
    fn extraction_follows_buildkit() {
        assert_eq!(
            ex("--from=build --chmod=755 a b"),
            (vec!["--from=build".into(), "--chmod=755".into()], "a b")
        );
        assert_eq!(ex("echo --x"), (vec![], "echo --x"));
        assert_eq!(ex("--chown=\"a b\" x"), (vec!["--chown=a b".into()], "x"));
        assert_eq!(ex("--x=a\\ b y"), (vec!["--x=a b".into()], "y"));
        assert_eq!(
            ex("--link -- --not-a-flag"),
            (vec!["--link".into()], " --not-a-flag")
        );
        assert_eq!(ex("--network=none"), (vec!["--network=none".into()], ""));
        assert_eq!(ex("-x"), (vec![], "-x"));
        assert_eq!(ex("--a='' b"), (vec!["--a=".into()], "b"));
        assert_eq!(ex("--é=ü ä"), (vec!["--é=ü".into()], "ä"));
        assert_eq!(ex("--x=\\"), (vec!["--x=".into()], ""));
    }

    #[test]
    fn checked_against_the_instruction() {
        let f = parse("COPY", &["--from=a".into(), "--link".into()]).expect("ok");
        assert_eq!(f.value("from"), Some("a"));
        assert!(f.on("link"));
        let f = parse("COPY", &["--link=FALSE".into(), "--chown=".into()]).expect("ok");
        assert!(!f.on("link"));
        assert_eq!(f.value("chown"), None);
        assert_eq!(f.raw("chown"), Some(""));
        let e = parse("ADD", &["--from=a".into()]).expect_err("wrong instruction");
        assert_eq!(
            e,
            "ADD --from: --from is a flag of COPY, not of ADD; ADD accepts --chown=USER[:GROUP], --chmod=MODE, --checksum=sha256:HEX, --link"
        );
        let e = parse("COPY", &["--form=a".into()]).expect_err("typo");
        assert!(
            e.starts_with(
                "COPY --form: unknown flag (did you mean --from?); COPY accepts --from=STAGE|IMAGE"
            ),
            "{e}"
        );
        let e = parse("ENV", &["--x".into()]).expect_err("no flags");
        assert_eq!(e, "ENV --x: unknown flag; ENV takes no flags");
        let e = parse("COPY", &["--chmod".into()]).expect_err("no value");
        assert_eq!(
            e,
            "COPY --chmod: the flag needs a value, as in --chmod=MODE"
        );
        let e = parse("COPY", &["--link=yes".into()]).expect_err("bad bool");
        assert_eq!(
            e,
            "COPY --link=yes: use --link, --link=true or --link=false"
        );
        let e =
            parse("RUN", &["--network=host".into(), "--network=none".into()]).expect_err("twice");
        assert_eq!(e, "RUN --network: given twice; give it once");
        let f = parse(
            "RUN",
            &[
                "--mount=type=cache,target=/x".into(),
                "--mount=target=/y".into(),
            ],
        )
        .expect("mounts");
        assert_eq!(f.values("mount"), ["type=cache,target=/x", "target=/y"]);
    }
}
