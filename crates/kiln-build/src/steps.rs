//! What each Dockerfile instruction does to a stage: metadata instructions change the image
//! config; RUN, COPY, ADD and WORKDIR change the file system through [`Engine::fs_step`].

use crate::builder::{Engine, State, arg_values};
use crate::context::{clean, expand_sources, hash_tree};
use crate::dockerfile::{Args, Instruction};
use crate::error::{BuildError, io_err};
use crate::fsops::{self, Attrs};
use crate::image::DEFAULT_PATH;
use crate::overlay::Overlay;
use crate::plan::find_stage;
use crate::shell_lex::{expand_heredoc, split_words};
use kiln_runtime::{Container, Mount, Network};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Apply one instruction to the stage.
pub(crate) fn dispatch(e: &Engine, st: &mut State, ins: &Instruction) -> Result<(), BuildError> {
    let text = ins.text.as_str();
    match ins.keyword.as_str() {
        "ARG" => {
            for (k, v) in arg_values(
                &e.file,
                ins,
                e.df.escape,
                &st.vars(),
                &e.opts.build_args,
                &e.global_vars,
            )? {
                st.key = crate::builder::chain(&st.key, &format!("ARG {k}={v}"));
                st.args.retain(|(n, _)| n != &k);
                st.args.push((k, v));
            }
        }
        "ENV" => {
            for (k, v) in pairs(e, st, ins)? {
                st.config.set_env(&k, &v);
            }
            meta(st, ins);
        }
        "LABEL" => {
            for (k, v) in pairs(e, st, ins)? {
                st.config.set_label(&k, &v);
            }
            meta(st, ins);
        }
        "MAINTAINER" => {
            st.config
                .0
                .insert("author".into(), Value::String(text.to_string()));
            meta(st, ins);
        }
        "USER" => {
            let user = e.expand(st, ins, text.trim())?;
            st.config.set("User", Value::String(user));
            meta(st, ins);
        }
        "WORKDIR" => {
            let dir = e.expand(st, ins, text.trim())?;
            let dir = if dir.starts_with('/') {
                dir
            } else {
                format!("{}/{dir}", st.config.get_str("WorkingDir"))
            };
            let dir = format!("/{}", clean(&dir));
            st.config.set("WorkingDir", Value::String(dir.clone()));
            let user = st.config.get_str("User").to_string();
            e.fs_step(
                st,
                ins,
                &format!("WORKDIR {dir} {user}"),
                &format!("WORKDIR {dir}"),
                &mut |root| {
                    let owner = owner_of(root, &user);
                    fsops::mkdir_all(root, &dir, owner).map(|_| ())
                },
            )?;
        }
        "CMD" | "ENTRYPOINT" => {
            let list = command_list(st, ins);
            if ins.keyword == "CMD" {
                st.config.set("Cmd", list);
                st.cmd_set = true;
            } else {
                st.config.set("Entrypoint", list);
                if !st.cmd_set {
                    st.config.set("Cmd", Value::Null);
                }
            }
            meta(st, ins);
        }
        "SHELL" => {
            let Args::Exec(list) = &ins.args else {
                return Err(e.err(
                    ins,
                    "SHELL needs the JSON form, as in SHELL [\"/bin/bash\", \"-c\"]",
                ));
            };
            st.config.set("Shell", json!(list));
            meta(st, ins);
        }
        "EXPOSE" => {
            for word in split_words(text, e.df.escape) {
                let port = e.expand(st, ins, &word)?;
                let (num, proto) = port.split_once('/').unwrap_or((&port, "tcp"));
                let proto = proto.to_ascii_lowercase();
                let ports: Vec<String> = match num.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (parse_port(e, ins, a)?, parse_port(e, ins, b)?);
                        (a..=b).map(|p| p.to_string()).collect()
                    }
                    None => vec![parse_port(e, ins, num)?.to_string()],
                };
                for p in ports {
                    st.config
                        .insert("ExposedPorts", &format!("{p}/{proto}"), json!({}));
                }
            }
            meta(st, ins);
        }
        "VOLUME" => {
            let words = match &ins.args {
                Args::Exec(v) => v.clone(),
                Args::Shell(t) => split_words(t, e.df.escape),
            };
            for w in words {
                let v = e.expand(st, ins, &w)?;
                if v.is_empty() {
                    return Err(e.err(ins, "VOLUME with an empty path"));
                }
                st.config.insert("Volumes", &v, json!({}));
            }
            meta(st, ins);
        }
        "STOPSIGNAL" => {
            let sig = e.expand(st, ins, text.trim())?;
            st.config.set("StopSignal", Value::String(sig));
            meta(st, ins);
        }
        "HEALTHCHECK" => {
            st.config.set("Healthcheck", healthcheck(e, st, ins)?);
            meta(st, ins);
        }
        "ONBUILD" => {
            let mut list = st
                .config
                .get("OnBuild")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            list.push(Value::String(text.to_string()));
            st.config.set("OnBuild", Value::Array(list));
            meta(st, ins);
        }
        "RUN" => run(e, st, ins)?,
        "COPY" | "ADD" => copy(e, st, ins)?,
        "FROM" => return Err(e.err(ins, "FROM inside a stage")),
        other => return Err(e.err(ins, format!("unsupported instruction {other}"))),
    }
    Ok(())
}

/// A metadata-only step: recorded in the history and in the chain key.
fn meta(st: &mut State, ins: &Instruction) {
    let line = format!("{} {}", ins.keyword, ins.text);
    st.key = crate::builder::chain(&st.key, &format!("{line}\n{:?}", st.config.0.get("config")));
    st.config.add_history(&line, true);
}

fn parse_port(e: &Engine, ins: &Instruction, s: &str) -> Result<u16, BuildError> {
    s.parse()
        .map_err(|_| e.err(ins, format!("invalid port {s:?}: use NUMBER[/tcp|/udp]")))
}

/// `key=value` pairs (ENV, LABEL), or the legacy `key value` form.
fn pairs(e: &Engine, st: &State, ins: &Instruction) -> Result<Vec<(String, String)>, BuildError> {
    let words = split_words(&ins.text, e.df.escape);
    let Some(first) = words.first() else {
        return Err(e.err(ins, format!("{} needs key=value", ins.keyword)));
    };
    if !first.contains('=') {
        let rest = ins.text.trim_start()[first.len()..].trim();
        if rest.is_empty() {
            return Err(e.err(ins, format!("{} {first} needs a value", ins.keyword)));
        }
        return Ok(vec![(e.expand(st, ins, first)?, e.expand(st, ins, rest)?)]);
    }
    let mut out = Vec::new();
    // ENV values see the earlier pairs of the same instruction only on later instructions, as
    // in Docker; expansion uses the state before this instruction.
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(e.err(ins, format!("{w:?} is not key=value")));
        };
        let k = e.expand(st, ins, k)?;
        if k.is_empty() {
            return Err(e.err(ins, format!("{w:?} has an empty key")));
        }
        out.push((k, e.expand(st, ins, v)?));
    }
    Ok(out)
}

/// CMD/ENTRYPOINT arguments: the JSON list, or the shell form wrapped in the stage's shell.
fn command_list(st: &State, ins: &Instruction) -> Value {
    match &ins.args {
        Args::Exec(v) => json!(v),
        Args::Shell(t) => {
            let mut v = shell(st);
            v.push(t.clone());
            json!(v)
        }
    }
}

fn shell(st: &State) -> Vec<String> {
    let shell = crate::image::strings(st.config.get("Shell"));
    if shell.is_empty() {
        vec!["/bin/sh".into(), "-c".into()]
    } else {
        shell
    }
}

fn healthcheck(e: &Engine, st: &State, ins: &Instruction) -> Result<Value, BuildError> {
    let rest = match &ins.args {
        Args::Shell(t) => t.trim(),
        Args::Exec(_) => "",
    };
    if rest.eq_ignore_ascii_case("NONE") {
        return Ok(json!({"Test": ["NONE"]}));
    }
    let Some(cmd) = rest
        .strip_prefix("CMD")
        .or_else(|| rest.strip_prefix("cmd"))
        .map(str::trim)
    else {
        return Err(e.err(ins, "HEALTHCHECK takes [OPTIONS] CMD command, or NONE"));
    };
    let test = match serde_json::from_str::<Vec<String>>(cmd) {
        Ok(v) if cmd.starts_with('[') => {
            let mut t = vec!["CMD".to_string()];
            t.extend(v);
            t
        }
        _ => vec!["CMD-SHELL".to_string(), cmd.to_string()],
    };
    let mut h = serde_json::Map::new();
    h.insert("Test".into(), json!(test));
    for f in &ins.flags {
        let v = f.value.clone().unwrap_or_default();
        let (key, value) = match f.name.as_str() {
            "interval" => ("Interval", json!(duration_ns(e, ins, &v)?)),
            "timeout" => ("Timeout", json!(duration_ns(e, ins, &v)?)),
            "start-period" => ("StartPeriod", json!(duration_ns(e, ins, &v)?)),
            "start-interval" => ("StartInterval", json!(duration_ns(e, ins, &v)?)),
            "retries" => (
                "Retries",
                json!(
                    v.parse::<u64>()
                        .map_err(|_| e.err(ins, format!("--retries={v}: not a number")))?
                ),
            ),
            other => return Err(e.err(ins, format!("unknown HEALTHCHECK flag --{other}"))),
        };
        h.insert(key.into(), value);
    }
    let _ = st;
    Ok(Value::Object(h))
}

/// A Go duration (`30s`, `1m30s`, `500ms`) in nanoseconds.
fn duration_ns(e: &Engine, ins: &Instruction, s: &str) -> Result<u64, BuildError> {
    let bad = || {
        e.err(
            ins,
            format!("invalid duration {s:?}: use for example 30s or 1m30s"),
        )
    };
    let mut total: f64 = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() || n == 'µ' {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let factor = match unit.as_str() {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        let n: f64 = num.parse().map_err(|_| bad())?;
        total += n * factor;
        num.clear();
    }
    if !num.is_empty() && num != "0" {
        return Err(bad());
    }
    // Durations are far below 2^64 ns; `as` saturates.
    #[allow(clippy::cast_possible_truncation)]
    Ok(total as u64)
}

fn owner_of(root: &Path, user: &str) -> Option<(u32, u32)> {
    if user.is_empty() {
        return None;
    }
    fsops::lookup_user(root, user).ok().map(|(u, g, _)| (u, g))
}

fn run(e: &Engine, st: &mut State, ins: &Instruction) -> Result<(), BuildError> {
    let args: Vec<String> = match &ins.args {
        Args::Exec(v) => v.clone(),
        Args::Shell(t) => {
            let only_heredoc = ins.heredocs.len() == 1 && {
                let n = &ins.heredocs[0].name;
                let t = t.trim();
                [
                    format!("<<{n}"),
                    format!("<<-{n}"),
                    format!("<<\"{n}\""),
                    format!("<<'{n}'"),
                ]
                .iter()
                .any(|f| f == t)
            };
            let script = if only_heredoc {
                ins.heredocs[0].content.clone()
            } else {
                let mut s = t.clone();
                for h in &ins.heredocs {
                    s.push('\n');
                    s.push_str(&h.content);
                    s.push_str(&h.name);
                }
                s
            };
            let mut v = shell(st);
            v.push(script);
            v
        }
    };
    if args.is_empty() {
        return Err(e.err(ins, "RUN needs a command"));
    }
    let network = match ins.flag("network").and_then(|f| f.value.as_deref()) {
        None | Some("default") => e.opts.network,
        Some("host") => Network::Host,
        Some("none") => Network::None,
        Some(other) => {
            return Err(e.err(ins, format!("--network={other}: use default, host or none")));
        }
    };
    for f in &ins.flags {
        if f.name != "network" {
            return Err(e.err(ins, format!("RUN --{} is not supported by kiln", f.name)));
        }
    }
    let user = st.config.get_str("User").to_string();
    let cwd = match st.config.get_str("WorkingDir") {
        "" => "/".to_string(),
        w => w.to_string(),
    };
    let mut env: Vec<(String, String)> = st.config.env();
    for (k, v) in &st.args {
        if !env.iter().any(|(n, _)| n == k) {
            env.push((k.clone(), v.clone()));
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let material = format!(
        "RUN {:?} env={:?} user={user} cwd={cwd} net={network:?}",
        args, env
    );
    let history = format!("RUN {}", ins.text);
    let file = e.file.clone();
    let line = ins.line;
    let scratch = e.ws.scratch();
    e.fs_step(st, ins, &material, &history, &mut |root| {
        let (uid, gid, groups) = if user.is_empty() {
            (0, 0, Vec::new())
        } else {
            fsops::lookup_user(root, &user).map_err(|m| BuildError::Dockerfile {
                file: file.clone(),
                line,
                message: format!("USER {user}: {m}"),
            })?
        };
        fsops::mkdir_all(root, &cwd, None)?;
        let files = tempfile::Builder::new()
            .prefix("run")
            .tempdir_in(&scratch)
            .map_err(io_err(&scratch))?;
        let resolv = files.path().join("resolv.conf");
        let hosts = files.path().join("hosts");
        let host_resolv = fs::read("/etc/resolv.conf").unwrap_or_default();
        fs::write(&resolv, host_resolv).map_err(io_err(&resolv))?;
        fs::write(
            &hosts,
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tkiln\n",
        )
        .map_err(io_err(&hosts))?;
        let mut container = Container::new(root, args.clone());
        container.env = env.clone();
        container.cwd = cwd.clone();
        (container.uid, container.gid, container.additional_gids) = (uid, gid, groups);
        container.network = network;
        container.mounts = vec![
            Mount::Bind {
                source: resolv.clone(),
                target: "/etc/resolv.conf".into(),
                readonly: false,
            },
            Mount::Bind {
                source: hosts.clone(),
                target: "/etc/hosts".into(),
                readonly: false,
            },
        ];
        let parents = parent_times(
            root,
            &["proc", "dev", "sys", "etc/resolv.conf", "etc/hosts"],
        );
        let created = container.prepare_mountpoints()?;
        let stdout = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map(std::process::Stdio::from)
            .unwrap_or_else(|_| std::process::Stdio::inherit());
        let status = container.run_with(stdout, std::process::Stdio::inherit());
        for p in created.iter().rev() {
            let _ = if p.is_dir() {
                fs::remove_dir(p)
            } else {
                fs::remove_file(p)
            };
        }
        restore_times(&parents);
        let status = status?;
        if !status.success() {
            return Err(BuildError::RunFailed {
                file: file.clone(),
                line,
                command: args.join(" ").chars().take(200).collect(),
                status: status
                    .code()
                    .map_or_else(|| status.to_string(), |c| format!("code {c}")),
            });
        }
        Ok(())
    })
}

use std::os::fd::AsFd;

/// Modification times of the directories that hold the given mount points.
fn parent_times(root: &Path, rels: &[&str]) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    for rel in rels {
        let p = root.join(rel);
        if let Some(parent) = p.parent()
            && let Ok(m) = fs::metadata(parent)
            && !out
                .iter()
                .any(|(q, _): &(PathBuf, fs::Metadata)| q == parent)
        {
            out.push((parent.to_path_buf(), m));
        }
    }
    out
}

fn restore_times(saved: &[(PathBuf, fs::Metadata)]) {
    use std::os::unix::fs::MetadataExt;
    for (p, m) in saved {
        let t = nix::sys::time::TimeSpec::new(m.mtime(), m.mtime_nsec());
        let a = nix::sys::time::TimeSpec::new(m.atime(), m.atime_nsec());
        let _ = nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            p,
            &a,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        );
    }
}

/// Where COPY/ADD sources come from.
enum Source {
    Context,
    Stage(usize),
    Image(String),
}

fn copy(e: &Engine, st: &mut State, ins: &Instruction) -> Result<(), BuildError> {
    let is_add = ins.keyword == "ADD";
    let mut words: Vec<String> = match &ins.args {
        Args::Exec(v) => v.clone(),
        Args::Shell(t) => split_words(t, e.df.escape),
    };
    if words.len() < 2 {
        return Err(e.err(
            ins,
            format!(
                "{} needs at least one source and a destination",
                ins.keyword
            ),
        ));
    }
    let dest_raw = words.pop().unwrap_or_default();
    let mut dest = e.expand(st, ins, &dest_raw)?;
    if !dest.starts_with('/') {
        let wd = st.config.get_str("WorkingDir");
        let trailing = dest.ends_with('/') || dest == "." || dest.is_empty();
        dest = format!("{}/{dest}", if wd.is_empty() { "" } else { wd });
        if trailing && !dest.ends_with('/') {
            dest.push('/');
        }
    }
    let mut from = None;
    let mut attrs = Attrs::default();
    let mut checksum = None;
    let mut chown = None;
    for f in &ins.flags {
        let v = f.value.clone().unwrap_or_default();
        match f.name.as_str() {
            "from" if !is_add => from = Some(e.expand(st, ins, &v)?),
            "chown" => chown = Some(e.expand(st, ins, &v)?),
            "chmod" => {
                attrs.mode = Some(
                    u32::from_str_radix(&v, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            e.err(ins, format!("--chmod={v}: use an octal mode such as 755"))
                        })?,
                )
            }
            "checksum" if is_add => checksum = Some(e.expand(st, ins, &v)?),
            "link" => {}
            other => {
                return Err(e.err(ins, format!("{} --{other} is not supported", ins.keyword)));
            }
        }
    }
    let source = match &from {
        None => Source::Context,
        Some(name) => {
            match find_stage(&e.plan.stages, &name.to_ascii_lowercase(), stage_of(e, ins)) {
                Some(i) => Source::Stage(i),
                None => Source::Image(name.clone()),
            }
        }
    };
    // Heredoc sources (`COPY <<EOF /dest`) and the named sources.
    let mut heredocs = Vec::new();
    let mut patterns = Vec::new();
    for w in &words {
        if let Some(h) = w
            .strip_prefix("<<")
            .map(|n| n.trim_start_matches('-').trim_matches(['"', '\'']))
            .and_then(|n| ins.heredocs.iter().find(|h| h.name == n))
        {
            let content = if h.expand {
                expand_heredoc(&h.content, &st.vars(), e.df.escape).map_err(|x| e.err(ins, x.0))?
            } else {
                h.content.clone()
            };
            heredocs.push((h.name.clone(), content));
        } else {
            patterns.push(e.expand(st, ins, w)?);
        }
    }
    // Resolve the source root and the key material.
    let (view, src_root, key_base, keep_owner): (Option<Overlay>, PathBuf, String, bool) =
        match &source {
            Source::Context => (None, e.context.root.clone(), "context".into(), false),
            Source::Stage(i) => {
                let s = e.stage_state(*i)?;
                (
                    Some(e.view(&s.layers)?),
                    PathBuf::new(),
                    format!("stage {}", s.key),
                    true,
                )
            }
            Source::Image(name) => {
                let (digest, layers, _) = e.image(ins, name, &e.opts.arch)?;
                (
                    Some(e.view(&layers)?),
                    PathBuf::new(),
                    format!("image {digest}"),
                    true,
                )
            }
        };
    let src_root = view.as_ref().map_or(src_root, |v| v.merged.clone());
    let ignore = matches!(source, Source::Context).then_some(&e.context.ignore);
    let mut urls = Vec::new();
    let mut sources: Vec<String> = Vec::new();
    for p in &patterns {
        if is_add && (p.starts_with("http://") || p.starts_with("https://")) {
            urls.push(p.clone());
            continue;
        }
        let found = expand_sources(&src_root, p, ignore).map_err(|m| e.err(ins, m))?;
        sources.extend(found);
    }
    if urls.len() > 1 && checksum.is_some() {
        return Err(e.err(ins, "ADD --checksum works with a single URL"));
    }
    let count = sources.len() + urls.len() + heredocs.len();
    let dest_is_dir = dest.ends_with('/') || count > 1;
    let context_root = e.context.root.clone();
    let skip = |p: &Path| -> bool {
        ignore.is_some_and(|i| {
            p.strip_prefix(&context_root).is_ok_and(|rel| {
                let dir = fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
                i.skips(&rel.to_string_lossy(), dir)
            })
        })
    };
    let mut material = format!(
        "{} {:?} {:?} dest={dest} from={key_base}",
        ins.keyword, ins.flags, patterns
    );
    for s in &sources {
        let path = fsops::resolve_in_root(&src_root, s, true);
        let h = hash_tree(&path, &skip).map_err(io_err(&path))?;
        material.push_str(&format!(" {s}={h}"));
    }
    for (name, content) in &heredocs {
        material.push_str(&format!(
            " <<{name}={}",
            hex::encode(Sha256::digest(content.as_bytes()))
        ));
    }
    // URLs are fetched before the cache lookup: their content is part of the key.
    let downloads = tempfile::Builder::new()
        .prefix("add")
        .tempdir_in(e.ws.scratch())
        .map_err(io_err(e.ws.scratch()))?;
    let mut fetched = Vec::new();
    for (n, url) in urls.iter().enumerate() {
        let path = downloads.path().join(n.to_string());
        let digest = download(url, &path).map_err(|m| e.err(ins, format!("ADD {url}: {m}")))?;
        if let Some(want) = &checksum
            && want.strip_prefix("sha256:").unwrap_or(want) != digest
        {
            return Err(e.err(
                ins,
                format!("ADD {url}: checksum mismatch: expected {want}, got sha256:{digest}"),
            ));
        }
        material.push_str(&format!(" {url}=sha256:{digest}"));
        let name = url
            .split(['?', '#'])
            .next()
            .and_then(|u| u.trim_end_matches('/').rsplit('/').next())
            .filter(|n| !n.is_empty() && !n.contains(':'))
            .unwrap_or("download")
            .to_string();
        fetched.push((path, name, 0o600));
    }
    for (i, (name, content)) in heredocs.iter().enumerate() {
        let path = downloads.path().join(format!("h{i}"));
        fs::write(&path, content).map_err(io_err(&path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).map_err(io_err(&path))?;
        fetched.push((path, name.clone(), 0o644));
    }
    let history = format!("{} {}", ins.keyword, ins.text);
    let file = e.file.clone();
    let line = ins.line;
    e.fs_step(st, ins, &material, &history, &mut |root| {
        let mut attrs = attrs;
        if let Some(c) = &chown {
            let (u, g, _) = fsops::lookup_user(root, c).map_err(|m| BuildError::Dockerfile {
                file: file.clone(),
                line,
                message: format!("--chown={c}: {m}"),
            })?;
            attrs.owner = Some((u, g));
        }
        attrs.keep_owner = keep_owner;
        let dest_dir = |root: &Path| fsops::mkdir_all(root, &dest, attrs.owner);
        for s in &sources {
            let src = fsops::resolve_in_root(&src_root, s, true);
            let meta = fs::metadata(&src).map_err(io_err(&src))?;
            if meta.is_dir() {
                let d = dest_dir(root)?;
                let mut children: Vec<_> = fs::read_dir(&src)
                    .map_err(io_err(&src))?
                    .collect::<Result<_, _>>()
                    .map_err(io_err(&src))?;
                children.sort_by_key(|c| c.file_name());
                for c in children {
                    if skip(&c.path()) {
                        continue;
                    }
                    fsops::copy_tree(&c.path(), &d.join(c.file_name()), attrs, &skip)?;
                }
            } else if is_add && is_archive(&src) {
                let d = dest_dir(root)?;
                extract_archive(&src, &d, attrs, &e.ws.scratch())?;
            } else {
                let base = s.rsplit('/').next().unwrap_or(s);
                let target = file_target(root, &dest, dest_is_dir, base, attrs)?;
                fsops::copy_tree(&src, &target, attrs, &skip)?;
            }
        }
        for (path, name, mode) in &fetched {
            let target = file_target(root, &dest, dest_is_dir, name, attrs)?;
            let a = Attrs {
                mode: attrs.mode.or(Some(*mode)),
                keep_owner: false,
                ..attrs
            };
            fsops::copy_tree(path, &target, a, &|_| false)?;
        }
        Ok(())
    })?;
    drop(view);
    Ok(())
}

/// Where a single file goes: into `dest` when it is (or must be) a directory, else at `dest`.
fn file_target(
    root: &Path,
    dest: &str,
    dest_is_dir: bool,
    base: &str,
    attrs: Attrs,
) -> Result<PathBuf, BuildError> {
    let existing = fsops::resolve_in_root(root, dest, true);
    if dest_is_dir || existing.is_dir() {
        let d = fsops::mkdir_all(root, dest, attrs.owner)?;
        return Ok(d.join(base));
    }
    let (parent, name) = dest
        .trim_end_matches('/')
        .rsplit_once('/')
        .unwrap_or(("", dest));
    let d = fsops::mkdir_all(
        root,
        if parent.is_empty() { "/" } else { parent },
        attrs.owner,
    )?;
    Ok(d.join(name))
}

/// The index of the stage `ins` belongs to.
fn stage_of(e: &Engine, ins: &Instruction) -> usize {
    e.plan
        .stages
        .iter()
        .rposition(|s| s.from.line <= ins.line)
        .unwrap_or(0)
}

/// Whether `path` is a tar archive, plain or compressed (gzip, bzip2, xz, zstd).
fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut f) = fs::File::open(path) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    let h = &head[..n];
    h.starts_with(&[0x1f, 0x8b])
        || h.starts_with(b"BZh")
        || h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (n >= 262 && &h[257..262] == b"ustar")
}

/// ADD's archive extraction: unpacked safely into scratch space, then copied into `dest` with
/// the archive's owners (or `--chown`).
fn extract_archive(
    src: &Path,
    dest: &Path,
    attrs: Attrs,
    scratch: &Path,
) -> Result<(), BuildError> {
    let f = fs::File::open(src).map_err(io_err(src))?;
    let reader = kiln_oci::decompress(std::io::BufReader::new(f)).map_err(io_err(src))?;
    let tmp = tempfile::Builder::new()
        .prefix("x")
        .tempdir_in(scratch)
        .map_err(io_err(scratch))?;
    crate::unpack::unpack(reader, tmp.path(), &src.display().to_string())?;
    let mut children: Vec<_> = fs::read_dir(tmp.path())
        .map_err(io_err(tmp.path()))?
        .collect::<Result<_, _>>()
        .map_err(io_err(tmp.path()))?;
    children.sort_by_key(|c| c.file_name());
    for c in children {
        fsops::copy_tree(
            &c.path(),
            &dest.join(c.file_name()),
            Attrs {
                keep_owner: true,
                ..attrs
            },
            &|_| false,
        )?;
    }
    Ok(())
}

/// Fetch `url` into `path`; returns the hex sha256 of the content.
fn download(url: &str, path: &Path) -> Result<String, String> {
    let mut resp = reqwest::blocking::get(url).map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let mut f = fs::File::create(path).map_err(|e| e.to_string())?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = resp.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        std::io::Write::write_all(&mut f, &buf[..n]).map_err(|e| e.to_string())?;
    }
    Ok(hex::encode(h.finalize()))
}
