//! Instructions that change the image config (ARG, ENV, LABEL, USER, CMD, ENTRYPOINT, SHELL,
//! EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER) and WORKDIR, which also creates
//! its directory. Values are expanded here, with the stage's variables, as BuildKit does.

use crate::context::clean;
use crate::dockerfile::{ArgDecl, Args, Healthcheck, Instruction, Pair, ports};
use crate::engine::Engine;
use crate::error::BuildError;
use crate::fsops;
use crate::state::{State, chain};
use crate::vars::arg_values;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// Record a config-only step in the history and in the chain key.
fn record(st: &mut State, ins: &Instruction) {
    let line = format!("{} {}", ins.keyword(), ins.text);
    st.key = chain(&st.key, &format!("{line}\n{:?}", st.config.0.get("config")));
    st.config.add_history(&line, true);
}

pub(super) fn arg(
    e: &Engine,
    st: &mut State,
    ins: &Instruction,
    decls: &[ArgDecl],
) -> Result<(), BuildError> {
    let values = arg_values(
        decls,
        e.escape,
        &st.vars(),
        &e.opts.build_args,
        &e.global_vars,
    )
    .map_err(|m| e.err(ins.line, m))?;
    for (k, v) in values {
        // An ARG without any value leaves the name as it was (unset, unless an earlier ARG of
        // the stage set it): BuildKit adds only valued ARGs to the step's environment.
        let Some(v) = v else {
            continue;
        };
        st.key = chain(&st.key, &format!("ARG {k}={v}"));
        st.args.retain(|(n, _)| n != &k);
        st.args.push((k, v));
    }
    Ok(())
}

/// ENV and LABEL pairs, expanded. Every pair sees the variables as they were before the
/// instruction, as in BuildKit.
fn expanded(
    e: &Engine,
    st: &State,
    ins: &Instruction,
    pairs: &[Pair],
) -> Result<Vec<(String, String)>, BuildError> {
    pairs
        .iter()
        .map(|p| {
            let key = e.expand(st, ins.line, &p.key)?;
            if key.is_empty() {
                return Err(e.err(
                    ins.line,
                    format!("{} {}: the key expands to nothing", ins.keyword(), p.key),
                ));
            }
            Ok((key, e.expand(st, ins.line, &p.value)?))
        })
        .collect()
}

pub(super) fn env(
    e: &Engine,
    st: &mut State,
    ins: &Instruction,
    pairs: &[Pair],
) -> Result<(), BuildError> {
    for (k, v) in expanded(e, st, ins, pairs)? {
        st.config.set_env(&k, &v);
    }
    record(st, ins);
    Ok(())
}

pub(super) fn label(
    e: &Engine,
    st: &mut State,
    ins: &Instruction,
    pairs: &[Pair],
) -> Result<(), BuildError> {
    for (k, v) in expanded(e, st, ins, pairs)? {
        st.config.set_label(&k, &v);
    }
    record(st, ins);
    Ok(())
}

pub(super) fn maintainer(st: &mut State, ins: &Instruction, name: &str) {
    st.config
        .0
        .insert("author".into(), Value::String(name.to_string()));
    record(st, ins);
}

pub(super) fn user(
    e: &Engine,
    st: &mut State,
    ins: &Instruction,
    user: &str,
) -> Result<(), BuildError> {
    set_expanded(e, st, ins, "User", user)
}

pub(super) fn stop_signal(
    e: &Engine,
    st: &mut State,
    ins: &Instruction,
    signal: &str,
) -> Result<(), BuildError> {
    set_expanded(e, st, ins, "StopSignal", signal)
}

/// Set the image config's `key` to `value` after variable expansion, and record the step.
fn set_expanded(
    e: &Engine,
    st: &mut State,
    ins: &Instruction,
    key: &str,
    value: &str,
) -> Result<(), BuildError> {
    let value = e.expand(st, ins.line, value)?;
    st.config.set(key, Value::String(value));
    record(st, ins);
    Ok(())
}

pub(super) fn workdir(
    e: &Engine,
    st: &mut State,
    ins: &Instruction,
    path: &str,
) -> Result<(), BuildError> {
    let dir = e.expand(st, ins.line, path)?;
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
    )
}

fn owner_of(root: &Path, user: &str) -> Option<(u32, u32)> {
    if user.is_empty() {
        return None;
    }
    fsops::lookup_user(root, user).ok().map(|(u, g, _)| (u, g))
}

/// CMD/ENTRYPOINT arguments: the JSON list, or the shell form wrapped in the stage's shell.
fn command_list(st: &State, args: &Args) -> Value {
    match args {
        Args::Exec(v) => json!(v),
        Args::Shell(t) => {
            let mut v = st.shell();
            v.push(t.clone());
            json!(v)
        }
    }
}

pub(super) fn cmd(st: &mut State, ins: &Instruction, args: &Args) {
    st.config.set("Cmd", command_list(st, args));
    st.cmd_set = true;
    record(st, ins);
}

pub(super) fn entrypoint(st: &mut State, ins: &Instruction, args: &Args) {
    st.config.set("Entrypoint", command_list(st, args));
    if !st.cmd_set {
        st.config.set("Cmd", Value::Null);
    }
    record(st, ins);
}

pub(super) fn shell(st: &mut State, ins: &Instruction, shell: &[String]) {
    st.config.set("Shell", json!(shell));
    record(st, ins);
}

pub(super) fn expose(
    e: &Engine,
    st: &mut State,
    ins: &Instruction,
    words: &[String],
) -> Result<(), BuildError> {
    for word in words {
        let spec = e.expand(st, ins.line, word)?;
        let ports = ports(&spec).map_err(|m| e.err(ins.line, format!("EXPOSE {word}: {m}")))?;
        for p in ports {
            st.config.insert("ExposedPorts", &p, json!({}));
        }
    }
    record(st, ins);
    Ok(())
}

pub(super) fn volume(
    e: &Engine,
    st: &mut State,
    ins: &Instruction,
    words: &[String],
) -> Result<(), BuildError> {
    for w in words {
        let v = e.expand(st, ins.line, w)?;
        if v.is_empty() {
            return Err(e.err(ins.line, format!("VOLUME {w}: the path expands to nothing")));
        }
        st.config.insert("Volumes", &v, json!({}));
    }
    record(st, ins);
    Ok(())
}

pub(super) fn healthcheck(st: &mut State, ins: &Instruction, check: &Healthcheck) {
    let value = match check {
        Healthcheck::None => json!({"Test": ["NONE"]}),
        Healthcheck::Check(c) => {
            // Zero values are left out, as Docker's config omits them.
            let ns = |d: Duration| json!(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            let mut h = serde_json::Map::new();
            h.insert("Test".into(), json!(c.test));
            for (key, d) in [
                ("Interval", c.interval),
                ("Timeout", c.timeout),
                ("StartPeriod", c.start_period),
                ("StartInterval", c.start_interval),
            ] {
                if !d.is_zero() {
                    h.insert(key.into(), ns(d));
                }
            }
            if c.retries > 0 {
                h.insert("Retries".into(), json!(c.retries));
            }
            Value::Object(h)
        }
    };
    st.config.set("Healthcheck", value);
    record(st, ins);
}

pub(super) fn onbuild(st: &mut State, ins: &Instruction, trigger: &str) {
    let mut list = st
        .config
        .get("OnBuild")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    list.push(Value::String(trigger.to_string()));
    st.config.set("OnBuild", Value::Array(list));
    record(st, ins);
}
