//! Building an image: parse the Dockerfile, plan its stages, build the needed stages wave by
//! wave (the stages of a wave in parallel), each step by [`steps::apply`], and write the target
//! stage as an OCI image into the store.

use crate::context::Context;
use crate::dockerfile::{self, Kind};
use crate::engine::{Engine, one_line, poisoned};
use crate::error::{BuildError, io_err};
use crate::events::{Event, LOG_DIR, new_log_dir};
use crate::image::{self, ImageConfig};
use crate::options::{BuildOptions, Built};
use crate::plan::{self, Base};
use crate::shell_lex::expand;
use crate::state::{State, chain};
use crate::steps;
use crate::vars::{arg_values, platform_args};
use crate::workspace::Workspace;
use kiln_oci::Store;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Build the image `opts` describes into `store`.
pub fn build(store: &Store, opts: &BuildOptions) -> Result<Built, BuildError> {
    let file = opts
        .dockerfile
        .file_name()
        .map_or_else(|| "Dockerfile".into(), |f| f.to_string_lossy().to_string());
    let text = std::fs::read_to_string(&opts.dockerfile).map_err(io_err(&opts.dockerfile))?;
    let df = dockerfile::parse(&file, &text)?;
    let context =
        Context::open(&opts.context, &opts.dockerfile).map_err(|m| BuildError::Dockerfile {
            file: crate::context::ignore_file(&opts.context, &opts.dockerfile)
                .display()
                .to_string(),
            line: 0,
            message: m,
        })?;
    // Global scope: the predefined platform ARGs, then the ARGs before the first FROM.
    let mut global_vars = platform_args(&opts.arch);
    for ins in &df.instructions {
        let Kind::Arg(decls) = &ins.kind else {
            break;
        };
        let values = arg_values(decls, df.escape, &global_vars, &opts.build_args, &[]).map_err(
            |message| BuildError::Dockerfile {
                file: file.clone(),
                line: ins.line,
                message,
            },
        )?;
        // A global ARG without any value stays unset (and keeps an earlier value), as in
        // BuildKit.
        global_vars.extend(values.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    }
    let plan = plan::plan(&file, &df, opts.target.as_deref(), &global_vars)?;
    if !opts.allow_insecure {
        refuse_insecure_steps(&file, &df)?;
    }
    let _guard = store.write_guard()?;
    let logs_root = store.root().join(LOG_DIR);
    let logs = new_log_dir(&logs_root).map_err(io_err(&logs_root))?;
    let engine = Engine {
        ws: Workspace::open(store)?,
        opts: opts.clone(),
        file,
        escape: df.escape,
        plan,
        context,
        global_vars,
        done: Mutex::new(HashMap::new()),
        executed: AtomicUsize::new(0),
        cached: AtomicUsize::new(0),
        cache_hits: Mutex::new(HashSet::new()),
        logs,
        images: Mutex::new(Default::default()),
        remote: crate::remote_cache::RemoteCache::new(
            &opts.cache_from,
            &opts.cache_to,
            &opts.registry,
        ),
    };
    for wave in engine.plan.waves.clone() {
        let results: Vec<Result<(usize, State), BuildError>> = std::thread::scope(|s| {
            let handles: Vec<_> = wave
                .iter()
                .map(|&i| {
                    let e = &engine;
                    s.spawn(move || build_stage(e, i).map(|st| (i, st)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(BuildError::Io {
                            path: PathBuf::new(),
                            source: std::io::Error::other("a build thread panicked"),
                        })
                    })
                })
                .collect()
        });
        for r in results {
            let (i, st) = r?;
            engine.done.lock().map_err(|_| poisoned())?.insert(i, st);
        }
    }
    let target = engine
        .done
        .lock()
        .map_err(|_| poisoned())?
        .remove(&engine.plan.target)
        .ok_or_else(poisoned)?;
    let mut config = target.config;
    for (k, v) in &opts.labels {
        config.set_label(k, v);
    }
    let created = image::timestamp(opts.source_date_epoch);
    config.finish(&target.layers, &created);
    let (manifest, descriptor) = image::write(store, &config, &target.layers)?;
    for tag in &opts.tags {
        store.tag(tag, descriptor.clone())?;
    }
    engine.remote.export(&engine.ws)?;
    Ok(Built {
        manifest,
        descriptor,
        config,
        executed: engine.executed.load(Ordering::Relaxed),
        cached: engine.cached.load(Ordering::Relaxed),
        images: engine
            .images
            .lock()
            .map_err(|_| poisoned())?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// Build stage `i`: its base (FROM), then each instruction of its body.
fn build_stage(e: &Engine, i: usize) -> Result<State, BuildError> {
    let stage = &e.plan.stages[i];
    let base = plan::base_of(&e.plan.stages, stage, e.escape, &e.global_vars)
        .map_err(|m| e.err(stage.line, m))?;
    // `--platform` sees the global scope only, as in BuildKit.
    let arch = match &stage.from.platform {
        Some(p) => p
            .resolve(|raw| expand(raw, &e.global_vars, e.escape).map_err(|x| x.0))
            .map_err(|m| e.err(stage.line, format!("FROM --platform={m}")))?
            .arch
            .unwrap_or_else(|| e.opts.arch.clone()),
        None => e.opts.arch.clone(),
    };
    let label = e.stage_label(i);
    let mut st = match &base {
        Base::Scratch => {
            e.progress(Event::StageStarted {
                stage: label.clone(),
                from: "scratch".into(),
            });
            State::new(
                i,
                Vec::new(),
                ImageConfig::scratch(&arch),
                chain("", "scratch"),
            )
        }
        Base::Stage(j) => {
            e.progress(Event::StageStarted {
                stage: label.clone(),
                from: e.stage_label(*j),
            });
            let s = e.stage_state(*j)?;
            State::new(i, s.layers, s.config, s.key)
        }
        Base::Image(name) => {
            e.progress(Event::StageStarted {
                stage: label.clone(),
                from: name.clone(),
            });
            let (digest, layers, config) = e.image(stage.line, name, &arch)?;
            State::new(i, layers, config, chain("", &format!("image {digest}")))
        }
    };
    let triggers = onbuild_triggers(e, i, &base, &st)?;
    // The new image does not pass its base's triggers on (BuildKit clears them).
    st.config.set("OnBuild", serde_json::Value::Null);
    let steps = triggers
        .iter()
        .map(|t| (t, "ONBUILD "))
        .chain(stage.body.iter().map(|b| (b, "")));
    for (ins, prefix) in steps {
        let instruction = format!("{prefix}{} {}", ins.keyword(), one_line(&ins.text));
        e.progress(Event::StepStarted {
            stage: label.clone(),
            line: ins.line,
            instruction: instruction.clone(),
        });
        let started = std::time::Instant::now();
        let result = steps::apply(e, &mut st, ins);
        let seconds = started.elapsed().as_secs_f64();
        // A RUN step that ran (not one from the cache) has a log.
        let log = Some(e.log_path(i, ins.line)).filter(|p| p.is_file());
        match result {
            Ok(()) => {
                let cached = e
                    .cache_hits
                    .lock()
                    .map_err(|_| poisoned())?
                    .contains(&(i, ins.line));
                e.progress(Event::StepFinished {
                    stage: label.clone(),
                    line: ins.line,
                    instruction,
                    cached,
                    seconds,
                    log: log.filter(|_| !cached),
                });
            }
            Err(err) => {
                e.progress(Event::StepFailed {
                    stage: label.clone(),
                    line: ins.line,
                    instruction,
                    seconds,
                    log,
                    error: err.to_string(),
                });
                return Err(err);
            }
        }
    }
    Ok(st)
}

/// The ONBUILD triggers stage `i` runs before its own instructions, in order: those in the
/// config of its base image, or those its base stage declares. A trigger's errors name the
/// stage's FROM line. A trigger of an image that copies from a stage needs that stage built
/// before this one.
fn onbuild_triggers(
    e: &Engine,
    i: usize,
    base: &Base,
    st: &State,
) -> Result<Vec<dockerfile::Instruction>, BuildError> {
    let stage = &e.plan.stages[i];
    let (texts, from): (Vec<String>, String) = match base {
        Base::Scratch => return Ok(Vec::new()),
        Base::Stage(j) => (
            plan::declared_triggers(&e.plan.stages[*j])
                .into_iter()
                .map(str::to_string)
                .collect(),
            format!("stage {}", e.stage_label(*j)),
        ),
        Base::Image(name) => (
            image::strings(st.config.get("OnBuild")),
            format!("image {name}"),
        ),
    };
    let mut triggers = Vec::new();
    for text in texts {
        let ins = plan::trigger_instruction(&text, stage.line)
            .map_err(|m| e.err(stage.line, format!("{m} (from {from})")))?;
        if let Kind::Copy(copy) = &ins.kind
            && let Some(src) = &copy.from
        {
            let built = match plan::copy_from(&e.plan.stages, src, i) {
                Ok(plan::CopyFrom::Stage(j)) => {
                    e.done.lock().map_err(|_| poisoned())?.contains_key(&j)
                }
                Ok(plan::CopyFrom::Image(_)) => true,
                Err(m) => return Err(e.err(stage.line, format!("{m} (ONBUILD trigger of {from})"))),
            };
            if !built {
                return Err(e.err(
                    stage.line,
                    format!(
                        "the ONBUILD trigger COPY --from={src} of {from} needs stage {src:?} \
                         built first; name that stage in this stage too (a COPY --from={src} \
                         of its own) so that it is built before"
                    ),
                ));
            }
        }
        if let Kind::Run(run) = &ins.kind
            && run.security == dockerfile::RunSecurity::Insecure
            && !e.opts.allow_insecure
        {
            return Err(e.err(
                stage.line,
                format!(
                    "the ONBUILD trigger RUN --security=insecure of {from} runs with all of \
                     root's capabilities and no sandbox; allow it with `--allow \
                     security.insecure` if you trust {from}"
                ),
            ));
        }
        triggers.push(ins);
    }
    Ok(triggers)
}

/// A `RUN --security=insecure` step needs the build's permission: refuse it, naming the line,
/// before any step runs.
fn refuse_insecure_steps(file: &str, df: &dockerfile::Dockerfile) -> Result<(), BuildError> {
    for ins in &df.instructions {
        if let Kind::Run(run) = &ins.kind
            && run.security == dockerfile::RunSecurity::Insecure
        {
            return Err(BuildError::Dockerfile {
                file: file.to_string(),
                line: ins.line,
                message: "RUN --security=insecure runs the step with all of root's capabilities \
                          and no sandbox; allow it with `--allow security.insecure` if you trust \
                          this Dockerfile"
                    .into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_before_any_step_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dockerfile = dir.path().join("Dockerfile");
        // Line 2 would fail when it runs (no such source); line 3's flag fails first, at parse
        // time.
        std::fs::write(
            &dockerfile,
            "FROM scratch\nCOPY missing.txt /x\nCOPY --chown a /b\n",
        )
        .expect("write");
        let store = Store::open(dir.path().join("store")).expect("store");
        let opts = BuildOptions::new(dir.path(), &dockerfile);
        let err = build(&store, &opts).expect_err("a flag without its value");
        assert_eq!(
            err.to_string(),
            "Dockerfile:3: COPY --chown: the flag needs a value, as in --chown=USER[:GROUP]"
        );
        std::fs::write(&dockerfile, "FROM scratch\nCOPY missing.txt /x\n").expect("write");
        let err = build(&store, &opts).expect_err("no such source");
        assert!(err.to_string().starts_with("Dockerfile:2: "), "{err}");
    }

    #[test]
    fn insecure_triggers_of_a_base_stage_need_the_builds_permission() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dockerfile = dir.path().join("Dockerfile");
        std::fs::write(
            &dockerfile,
            "FROM scratch AS a\nONBUILD RUN --security=insecure true\nFROM a\n",
        )
        .expect("write");
        let store = Store::open(dir.path().join("store")).expect("store");
        let opts = BuildOptions::new(dir.path(), &dockerfile);
        let err = build(&store, &opts).expect_err("an insecure trigger");
        assert!(
            err.to_string().starts_with(
                "Dockerfile:3: the ONBUILD trigger RUN --security=insecure of stage a runs"
            ),
            "{err}"
        );
    }
}
