//! The typed instructions of a Dockerfile, and how each is read from its line. Arguments and
//! flags are checked here, when the Dockerfile is parsed; variables in them are expanded at
//! build time, where BuildKit expands them, because their values depend on ARG and ENV scoping.

use super::flags::{self, Flags};
use super::values::{
    Checksum, Deferred, FlagValue, Mode, Platform, RunNetwork, RunSecurity, duration, ports,
    retries,
};
use crate::shell_lex::{expand, split_words};
use std::time::Duration;

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

/// A heredoc (`<<EOF ... EOF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word.
    pub name: String,
    /// The body, each line ending in a newline.
    pub content: String,
    /// Whether variables in the body are expanded (the delimiter was not quoted).
    pub expand: bool,
}

/// What an instruction says, by instruction.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `FROM [--platform=P] IMAGE [AS NAME]`: starts a stage.
    From(From),
    /// `RUN [--network=N] COMMAND`.
    Run(Run),
    /// `CMD COMMAND`.
    Cmd(Args),
    /// `ENTRYPOINT COMMAND`.
    Entrypoint(Args),
    /// `COPY [--from=S] [--chown=U] [--chmod=M] [--link] SRC... DEST`.
    Copy(Copy),
    /// `ADD [--chown=U] [--chmod=M] [--checksum=D] [--link] SRC... DEST`.
    Add(Add),
    /// `ENV KEY=VALUE...` (or the legacy `ENV KEY VALUE`).
    Env(Vec<Pair>),
    /// `LABEL KEY=VALUE...`.
    Label(Vec<Pair>),
    /// `ARG NAME[=DEFAULT]...`.
    Arg(Vec<ArgDecl>),
    /// `WORKDIR PATH` (unexpanded).
    Workdir(String),
    /// `USER USER[:GROUP]` (unexpanded).
    User(String),
    /// `EXPOSE PORT[/PROTO]...` (unexpanded words).
    Expose(Vec<String>),
    /// `VOLUME PATH...` (unexpanded words).
    Volume(Vec<String>),
    /// `SHELL ["EXECUTABLE", "PARAMETERS"...]`.
    Shell(Vec<String>),
    /// `STOPSIGNAL SIGNAL` (unexpanded).
    StopSignal(String),
    /// `HEALTHCHECK [OPTIONS] CMD COMMAND` or `HEALTHCHECK NONE`.
    Healthcheck(Healthcheck),
    /// `ONBUILD INSTRUCTION`: the trigger as written (heredoc bodies appended).
    Onbuild(String),
    /// `MAINTAINER NAME`.
    Maintainer(String),
}

impl Kind {
    /// The instruction's keyword, upper-case.
    pub fn keyword(&self) -> &'static str {
        match self {
            Kind::From(_) => "FROM",
            Kind::Run(_) => "RUN",
            Kind::Cmd(_) => "CMD",
            Kind::Entrypoint(_) => "ENTRYPOINT",
            Kind::Copy(_) => "COPY",
            Kind::Add(_) => "ADD",
            Kind::Env(_) => "ENV",
            Kind::Label(_) => "LABEL",
            Kind::Arg(_) => "ARG",
            Kind::Workdir(_) => "WORKDIR",
            Kind::User(_) => "USER",
            Kind::Expose(_) => "EXPOSE",
            Kind::Volume(_) => "VOLUME",
            Kind::Shell(_) => "SHELL",
            Kind::StopSignal(_) => "STOPSIGNAL",
            Kind::Healthcheck(_) => "HEALTHCHECK",
            Kind::Onbuild(_) => "ONBUILD",
            Kind::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// Arguments in shell form (one string) or exec form (a JSON array).
#[derive(Debug, Clone, PartialEq)]
pub enum Args {
    /// Shell form: the raw text.
    Shell(String),
    /// Exec form: the decoded JSON array.
    Exec(Vec<String>),
}

impl Args {
    /// Exec form if `text` is a JSON array of strings, else shell form.
    pub(crate) fn parse(text: &str) -> Args {
        if text.starts_with('[')
            && let Ok(v) = serde_json::from_str::<Vec<String>>(text)
        {
            return Args::Exec(v);
        }
        Args::Shell(text.to_string())
    }

    /// The words: the JSON array, or the shell text split on unquoted whitespace.
    fn words(&self, escape: char) -> Vec<String> {
        match self {
            Args::Exec(v) => v.clone(),
            Args::Shell(t) => split_words(t, escape),
        }
    }
}

/// A FROM instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct From {
    /// The base: an image, an earlier stage or `scratch` (unexpanded: global ARGs apply).
    pub image: String,
    /// The stage's name (`AS name`), lower-case.
    pub name: Option<String>,
    /// `--platform`, expanded with the global ARGs.
    pub platform: Option<Deferred<Platform>>,
}

/// A RUN instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The command.
    pub command: Args,
    /// Heredocs opened on the line, in order.
    pub heredocs: Vec<Heredoc>,
    /// `--network`.
    pub network: RunNetwork,
    /// `--security`.
    pub security: RunSecurity,
    /// Each `--mount` value as written (checked when read; its values are expanded with the
    /// stage's variables when the step runs).
    pub mounts: Vec<String>,
}

impl Run {
    /// The command line to run: the exec form as it is, or the shell form given to `shell`
    /// as one script. A shell form that is only a heredoc (`RUN <<EOF`) runs the heredoc's
    /// body; otherwise each heredoc's body and delimiter follow the line, as in a shell.
    pub fn argv(&self, shell: &[String]) -> Vec<String> {
        let text = match &self.command {
            Args::Exec(v) => return v.clone(),
            Args::Shell(t) => t.trim(),
        };
        let script = match self.heredocs.as_slice() {
            [h] if [
                format!("<<{}", h.name),
                format!("<<-{}", h.name),
                format!("<<\"{}\"", h.name),
                format!("<<'{}'", h.name),
            ]
            .iter()
            .any(|f| f == text) =>
            {
                h.content.clone()
            }
            heredocs => {
                let mut s = text.to_string();
                for h in heredocs {
                    s.push('\n');
                    s.push_str(&h.content);
                    s.push_str(&h.name);
                }
                s
            }
        };
        shell.iter().cloned().chain([script]).collect()
    }
}

/// What COPY and ADD share: sources, destination and the attributes of the copies.
#[derive(Debug, Clone, PartialEq)]
pub struct Files {
    /// The sources, in order.
    pub sources: Vec<Source>,
    /// The destination (unexpanded).
    pub dest: String,
    /// `--chown=USER[:GROUP]` (unexpanded).
    pub chown: Option<String>,
    /// `--chmod=MODE`.
    pub chmod: Option<Deferred<Mode>>,
    /// `--link` (kiln's layers are always independent of the destination's, so it changes
    /// nothing but the cache key).
    pub link: bool,
}

/// A COPY or ADD source.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A path or pattern (or, for ADD, a URL), unexpanded.
    Path(String),
    /// A heredoc (`<<EOF`), whose body becomes a file named after its delimiter.
    Heredoc(Heredoc),
}

/// A COPY instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct Copy {
    /// Sources, destination and attributes.
    pub files: Files,
    /// `--from`: a stage name or index, or an image (never expanded, as in BuildKit).
    pub from: Option<String>,
}

/// An ADD instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct Add {
    /// Sources, destination and attributes.
    pub files: Files,
    /// `--checksum` of the single URL source.
    pub checksum: Option<Deferred<Checksum>>,
}

/// A `KEY=VALUE` pair of ENV or LABEL, both unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// One name an ARG declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The name.
    pub name: String,
    /// The default (unexpanded), if `=` was given.
    pub default: Option<String>,
}

/// A HEALTHCHECK instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: no health check, not even an inherited one.
    None,
    /// `HEALTHCHECK [OPTIONS] CMD ...`.
    Check(Check),
}

/// A health check command and its timing (zero: the runtime's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `["CMD", args...]` (exec form) or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    /// `--interval`.
    pub interval: Duration,
    /// `--timeout`.
    pub timeout: Duration,
    /// `--start-period`.
    pub start_period: Duration,
    /// `--start-interval`.
    pub start_interval: Duration,
    /// `--retries`.
    pub retries: u32,
}

/// Read a `keyword` instruction from its flag words, the text after them and its heredocs.
/// The error says what is wrong and what the instruction accepts.
pub(super) fn parse(
    keyword: &str,
    flag_words: &[String],
    rest: &str,
    heredocs: Vec<Heredoc>,
    escape: char,
) -> Result<Kind, String> {
    let flags = flags::parse(keyword, flag_words)?;
    let needs = |what: &str| -> Result<(), String> {
        if rest.is_empty() {
            Err(format!("{keyword} needs {what}"))
        } else {
            Ok(())
        }
    };
    Ok(match keyword {
        "FROM" => Kind::From(from(&flags, rest, escape)?),
        "RUN" => Kind::Run(run(&flags, rest, heredocs)?),
        "CMD" => Kind::Cmd(Args::parse(rest)),
        "ENTRYPOINT" => Kind::Entrypoint(Args::parse(rest)),
        "COPY" => {
            let files = files(keyword, &flags, rest, heredocs, escape)?;
            Kind::Copy(Copy {
                from: copy_from(&flags, escape)?,
                files,
            })
        }
        "ADD" => {
            let files = files(keyword, &flags, rest, heredocs, escape)?;
            Kind::Add(Add {
                checksum: checksum(&flags, &files, escape)?,
                files,
            })
        }
        "ENV" | "LABEL" => {
            let p = pairs(keyword, rest, escape)?;
            if keyword == "ENV" {
                Kind::Env(p)
            } else {
                Kind::Label(p)
            }
        }
        "ARG" => Kind::Arg(args(rest, escape)?),
        "WORKDIR" => {
            needs("a path, as in WORKDIR /app")?;
            Kind::Workdir(rest.to_string())
        }
        "USER" => {
            needs("a user, as in USER 1000:1000 or USER nobody")?;
            Kind::User(rest.to_string())
        }
        "STOPSIGNAL" => {
            needs("a signal, as in STOPSIGNAL SIGTERM")?;
            Kind::StopSignal(rest.to_string())
        }
        "MAINTAINER" => {
            needs("a name")?;
            Kind::Maintainer(rest.to_string())
        }
        "EXPOSE" => Kind::Expose(expose(rest, escape)?),
        "VOLUME" => Kind::Volume(volume(rest, escape)?),
        "SHELL" => match Args::parse(rest) {
            Args::Exec(v) if !v.is_empty() => Kind::Shell(v),
            _ => {
                return Err(
                    "SHELL needs the JSON form, as in SHELL [\"/bin/bash\", \"-c\"]".into(),
                );
            }
        },
        "HEALTHCHECK" => Kind::Healthcheck(healthcheck(&flags, flag_words, rest)?),
        "ONBUILD" => Kind::Onbuild(onbuild(rest, &heredocs)?),
        other => return Err(format!("unknown instruction {other:?}")),
    })
}

fn from(flags: &Flags, rest: &str, escape: char) -> Result<From, String> {
    let words = split_words(rest, escape);
    let (image, name) = match words.as_slice() {
        [image] => (image.clone(), None),
        [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            (image.clone(), Some(name.to_ascii_lowercase()))
        }
        _ => {
            return Err(format!(
                "FROM {rest}: expected FROM [--platform=P] IMAGE [AS NAME]"
            ));
        }
    };
    if let Some(n) = &name
        && (!n.starts_with(|c: char| c.is_ascii_lowercase())
            || !n
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c)))
    {
        return Err(format!(
            "invalid stage name {n:?}: start with a letter, then use letters, digits, -, _ or ."
        ));
    }
    Ok(From {
        image,
        name,
        platform: deferred("FROM", "platform", flags, escape)?,
    })
}

fn run(flags: &Flags, rest: &str, heredocs: Vec<Heredoc>) -> Result<Run, String> {
    let network = match flags.raw("network") {
        None => RunNetwork::Default,
        Some(v) => RunNetwork::parse(v).map_err(|m| format!("RUN --network={v}: {m}"))?,
    };
    let security = match flags.raw("security") {
        None => RunSecurity::Sandbox,
        Some(v) => RunSecurity::parse(v).map_err(|m| format!("RUN --security={v}: {m}"))?,
    };
    let mounts = flags.values("mount");
    for m in &mounts {
        super::mount::check_mount(m).map_err(|e| format!("RUN --mount={m}: {e}"))?;
    }
    // An empty shell form runs `sh -c ""`, as in BuildKit; an empty exec form has nothing to run.
    let command = Args::parse(rest);
    if command == Args::Exec(Vec::new()) {
        return Err("RUN needs a command".into());
    }
    Ok(Run {
        command,
        heredocs,
        network,
        security,
        mounts,
    })
}

/// A flag whose value BuildKit expands: checked now unless it names variables.
fn deferred<T: FlagValue>(
    keyword: &str,
    name: &str,
    flags: &Flags,
    escape: char,
) -> Result<Option<Deferred<T>>, String> {
    flags
        .value(name)
        .map(|v| Deferred::new(v, escape).map_err(|m| format!("{keyword} --{name}={v}: {m}")))
        .transpose()
}

fn heredoc_word<'a>(word: &str, heredocs: &'a [Heredoc]) -> Option<&'a Heredoc> {
    let name = word
        .strip_prefix("<<")?
        .trim_start_matches('-')
        .trim_matches(['"', '\'']);
    heredocs.iter().find(|h| h.name == name)
}

fn files(
    keyword: &str,
    flags: &Flags,
    rest: &str,
    heredocs: Vec<Heredoc>,
    escape: char,
) -> Result<Files, String> {
    let mut words = Args::parse(rest).words(escape);
    let Some(dest) = words.pop().filter(|_| !words.is_empty()) else {
        return Err(format!(
            "{keyword} needs at least one source and a destination: {keyword} SRC... DEST"
        ));
    };
    if heredoc_word(&dest, &heredocs).is_some() {
        return Err(format!(
            "{keyword} {dest}: a heredoc cannot be the destination"
        ));
    }
    let sources = words
        .into_iter()
        .map(|w| match heredoc_word(&w, &heredocs) {
            Some(h) => Source::Heredoc(h.clone()),
            None => Source::Path(w),
        })
        .collect();
    Ok(Files {
        sources,
        dest,
        chown: flags.value("chown").map(str::to_string),
        chmod: deferred(keyword, "chmod", flags, escape)?,
        link: flags.on("link"),
    })
}

/// COPY `--from`: BuildKit refuses variables in it.
fn copy_from(flags: &Flags, escape: char) -> Result<Option<String>, String> {
    let Some(v) = flags.value("from") else {
        return Ok(None);
    };
    if expand(v, &[], escape).ok().as_deref() != Some(v) {
        return Err(format!(
            "COPY --from={v}: variables are not expanded in --from; name a stage instead (FROM ${{IMAGE}} AS name, with a global ARG)"
        ));
    }
    Ok(Some(v.to_string()))
}

/// ADD `--checksum`: for a single URL source.
fn checksum(
    flags: &Flags,
    files: &Files,
    escape: char,
) -> Result<Option<Deferred<Checksum>>, String> {
    let Some(sum) = deferred("ADD", "checksum", flags, escape)? else {
        return Ok(None);
    };
    let paths: Vec<&String> = files
        .sources
        .iter()
        .filter_map(|s| match s {
            Source::Path(p) => Some(p),
            Source::Heredoc(_) => None,
        })
        .collect();
    match paths.as_slice() {
        [one] if one.contains('$') || is_url(one) => Ok(Some(sum)),
        _ => Err("ADD --checksum: give a single http:// or https:// source".into()),
    }
}

/// Whether an ADD source is a URL.
pub(crate) fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// ENV and LABEL pairs: `KEY=VALUE...`, or the legacy `KEY VALUE` (the value is the rest of the
/// line).
fn pairs(keyword: &str, rest: &str, escape: char) -> Result<Vec<Pair>, String> {
    let words = split_words(rest, escape);
    let Some(first) = words.first() else {
        return Err(format!("{keyword} needs KEY=VALUE"));
    };
    if !first.contains('=') {
        let value = rest[first.len()..].trim();
        if value.is_empty() {
            return Err(format!(
                "{keyword} {first} needs a value: {keyword} {first}=VALUE"
            ));
        }
        return Ok(vec![Pair {
            key: first.clone(),
            value: value.to_string(),
        }]);
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some(("", _)) => Err(format!("{keyword} {w}: the key is empty")),
            Some((k, v)) => Ok(Pair {
                key: k.to_string(),
                value: v.to_string(),
            }),
            None => Err(format!("{keyword} {w}: not KEY=VALUE")),
        })
        .collect()
}

fn args(rest: &str, escape: char) -> Result<Vec<ArgDecl>, String> {
    let words = split_words(rest, escape);
    if words.is_empty() {
        return Err("ARG needs a name, as in ARG NAME or ARG NAME=default".into());
    }
    words
        .into_iter()
        .map(|word| {
            let (name, default) = match word.split_once('=') {
                Some((n, d)) => (n.to_string(), Some(d.to_string())),
                None => (word, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "invalid ARG name {name:?}: use letters, digits and _"
                ));
            }
            Ok(ArgDecl { name, default })
        })
        .collect()
}

fn expose(rest: &str, escape: char) -> Result<Vec<String>, String> {
    let words = split_words(rest, escape);
    if words.is_empty() {
        return Err("EXPOSE needs a port, as in EXPOSE 80/tcp".into());
    }
    for w in words.iter().filter(|w| !w.contains('$')) {
        let port = expand(w, &[], escape).map_err(|e| format!("EXPOSE {w}: {}", e.0))?;
        ports(&port).map_err(|m| format!("EXPOSE {w}: {m}"))?;
    }
    Ok(words)
}

fn volume(rest: &str, escape: char) -> Result<Vec<String>, String> {
    let words = Args::parse(rest).words(escape);
    if words.is_empty() {
        return Err("VOLUME needs a path, as in VOLUME /data".into());
    }
    if words.iter().any(|w| w.trim().is_empty()) {
        return Err("VOLUME with an empty path".into());
    }
    Ok(words)
}

fn healthcheck(flags: &Flags, flag_words: &[String], rest: &str) -> Result<Healthcheck, String> {
    let (kind, command) = match rest.split_once(char::is_whitespace) {
        Some((k, c)) => (k, c.trim()),
        None => (rest, ""),
    };
    if kind.eq_ignore_ascii_case("NONE") {
        if !command.is_empty() || !flag_words.is_empty() {
            return Err("HEALTHCHECK NONE takes no flags and no arguments".into());
        }
        return Ok(Healthcheck::None);
    }
    if !kind.eq_ignore_ascii_case("CMD") {
        return Err(format!(
            "HEALTHCHECK {kind}: use HEALTHCHECK [OPTIONS] CMD command, or HEALTHCHECK NONE"
        ));
    }
    let test = match Args::parse(command) {
        Args::Exec(v) if !v.is_empty() => ["CMD".to_string()].into_iter().chain(v).collect(),
        Args::Shell(c) if !c.is_empty() => vec!["CMD-SHELL".to_string(), c],
        _ => return Err("HEALTHCHECK CMD needs a command".into()),
    };
    let time = |name: &str| -> Result<Duration, String> {
        flags.value(name).map_or(Ok(Duration::ZERO), |v| {
            duration(v).map_err(|m| format!("HEALTHCHECK --{name}={v}: {m}"))
        })
    };
    Ok(Healthcheck::Check(Check {
        test,
        interval: time("interval")?,
        timeout: time("timeout")?,
        start_period: time("start-period")?,
        start_interval: time("start-interval")?,
        retries: flags.value("retries").map_or(Ok(0), |v| {
            retries(v).map_err(|m| format!("HEALTHCHECK --retries={v}: {m}"))
        })?,
    }))
}

fn onbuild(rest: &str, heredocs: &[Heredoc]) -> Result<String, String> {
    let trigger = rest
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    match trigger.as_str() {
        "" => return Err("ONBUILD needs an instruction, as in ONBUILD RUN make".into()),
        "ONBUILD" => return Err("ONBUILD ONBUILD is not allowed".into()),
        "FROM" | "MAINTAINER" => {
            return Err(format!("{trigger} is not allowed as an ONBUILD trigger"));
        }
        t if !KEYWORDS.contains(&t) => {
            return Err(format!(
                "unknown instruction {t:?} after ONBUILD{}",
                keyword_hint(t)
            ));
        }
        _ => {}
    }
    let mut expression = rest.to_string();
    for h in heredocs {
        expression.push('\n');
        expression.push_str(&h.content);
        expression.push_str(&h.name);
    }
    Ok(expression)
}

/// ": did you mean X?" for a misspelt instruction, or nothing.
pub(super) fn keyword_hint(word: &str) -> String {
    KEYWORDS
        .iter()
        .map(|k| (strsim::levenshtein(k, word), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(": did you mean {k}?"))
        .unwrap_or_default()
}
