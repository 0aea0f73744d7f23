//! Stages and their dependencies: which stages the target needs, and in which waves they can be
//! built (stages of one wave do not depend on each other and are built in parallel).

use crate::dockerfile::{Dockerfile, From, Instruction, Kind};
use crate::error::BuildError;
use crate::shell_lex::expand;

/// One `FROM ... [AS name]` stage.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Position among the stages.
    pub index: usize,
    /// Line of the FROM instruction.
    pub line: usize,
    /// The FROM instruction.
    pub from: From,
    /// The instructions after FROM.
    pub body: Vec<Instruction>,
}

impl Stage {
    /// The `AS` name, lower-cased.
    pub fn name(&self) -> Option<&str> {
        self.from.name.as_deref()
    }
}

/// Where a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `FROM scratch`.
    Scratch,
    /// An earlier stage.
    Stage(usize),
    /// An image reference.
    Image(String),
}

/// Where `COPY --from` copies from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFrom {
    /// An earlier stage.
    Stage(usize),
    /// An image reference.
    Image(String),
}

/// The stages of a Dockerfile, the global ARGs and the build order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// ARG instructions before the first FROM.
    pub global_args: Vec<Instruction>,
    /// All stages.
    pub stages: Vec<Stage>,
    /// The stage to build.
    pub target: usize,
    /// Waves of stage indexes: each wave depends only on earlier waves.
    pub waves: Vec<Vec<usize>>,
}

/// Split a Dockerfile into stages, pick the target and order what it needs. `global_vars` are
/// the values used to expand FROM lines (global ARGs and build arguments).
pub fn plan(
    file: &str,
    df: &Dockerfile,
    target: Option<&str>,
    global_vars: &[(String, String)],
) -> Result<Plan, BuildError> {
    let err = |line: usize, message: String| BuildError::Dockerfile {
        file: file.to_string(),
        line,
        message,
    };
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for ins in &df.instructions {
        if let Kind::From(from) = &ins.kind {
            if let Some(n) = &from.name
                && stages.iter().any(|s| s.name() == Some(n))
            {
                return Err(err(ins.line, format!("stage name {n:?} is used twice")));
            }
            stages.push(Stage {
                index: stages.len(),
                line: ins.line,
                from: from.clone(),
                body: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.body.push(ins.clone());
        } else {
            global_args.push(ins.clone());
        }
    }
    if stages.is_empty() {
        return Err(err(
            1,
            "no FROM instruction: a Dockerfile starts with FROM".into(),
        ));
    }
    let target = match target {
        None => stages.len() - 1,
        Some(t) => find_stage(&stages, &t.to_ascii_lowercase(), stages.len()).ok_or_else(|| {
            let names: Vec<_> = stages.iter().filter_map(Stage::name).collect();
            err(
                1,
                format!(
                    "target stage {t:?} not found; stages are: {}",
                    names.join(", ")
                ),
            )
        })?,
    };
    // Dependencies of each stage: its base and every COPY --from that names a stage, in its
    // body or in the ONBUILD triggers of a base stage.
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); stages.len()];
    for s in &stages {
        let mut triggers = Vec::new();
        if let Base::Stage(i) =
            base_of(&stages, s, df.escape, global_vars).map_err(|m| err(s.line, m))?
        {
            deps[s.index].push(i);
            for t in declared_triggers(&stages[i]) {
                triggers.push(trigger_instruction(t, s.line).map_err(|m| err(s.line, m))?);
            }
        }
        for ins in triggers.iter().chain(&s.body) {
            if let Kind::Copy(copy) = &ins.kind
                && let Some(from) = &copy.from
                && let CopyFrom::Stage(i) =
                    copy_from(&stages, from, s.index).map_err(|m| err(ins.line, m))?
            {
                deps[s.index].push(i);
            }
            if let Kind::Run(run) = &ins.kind {
                for from in run
                    .mounts
                    .iter()
                    .filter_map(|m| crate::dockerfile::mount_from(m))
                {
                    if let CopyFrom::Stage(i) = copy_from(&stages, &from, s.index).map_err(|m| {
                        err(ins.line, m.replacen("COPY --from=", "RUN --mount=from=", 1))
                    })? {
                        deps[s.index].push(i);
                    }
                }
            }
        }
    }
    // Waves: repeatedly take the needed stages whose dependencies are done.
    let mut needed = vec![false; stages.len()];
    let mut stack = vec![target];
    while let Some(i) = stack.pop() {
        if !needed[i] {
            needed[i] = true;
            stack.extend(deps[i].iter().copied());
        }
    }
    let mut done = vec![false; stages.len()];
    let mut waves = Vec::new();
    loop {
        let wave: Vec<usize> = (0..stages.len())
            .filter(|&i| needed[i] && !done[i] && deps[i].iter().all(|&d| done[d]))
            .collect();
        if wave.is_empty() {
            break;
        }
        for &i in &wave {
            done[i] = true;
        }
        waves.push(wave);
    }
    Ok(Plan {
        global_args,
        stages,
        target,
        waves,
    })
}

/// The ONBUILD triggers stage `stage` declares, in order: a stage built FROM it runs them
/// before its own instructions (as BuildKit does for a stage reference; triggers the stage
/// inherited from its own base ran in it and are not passed on).
pub fn declared_triggers(stage: &Stage) -> Vec<&str> {
    stage
        .body
        .iter()
        .filter_map(|ins| match &ins.kind {
            Kind::Onbuild(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// An ONBUILD trigger parsed into the instruction it runs, placed at `line` (the FROM line of
/// the stage that runs it, as BuildKit places it).
pub fn trigger_instruction(trigger: &str, line: usize) -> Result<Instruction, String> {
    let what = || format!("ONBUILD trigger {:?}", crate::engine::one_line(trigger));
    // The parser wants a Dockerfile: the trigger is the one instruction after a FROM.
    let text = format!("FROM scratch\n{trigger}");
    let df = crate::dockerfile::parse("ONBUILD", &text).map_err(|e| match e {
        BuildError::Dockerfile { message, .. } => format!("{}: {message}", what()),
        other => format!("{}: {other}", what()),
    })?;
    let [_, ins] = <[Instruction; 2]>::try_from(df.instructions)
        .map_err(|_| format!("{}: a trigger must be exactly one instruction", what()))?;
    if matches!(ins.kind, Kind::From(_) | Kind::Onbuild(_)) {
        return Err(format!(
            "{}: {} is not allowed as an ONBUILD trigger",
            what(),
            ins.keyword()
        ));
    }
    Ok(Instruction { line, ..ins })
}

/// A stage by name or by index, among the stages before `before`.
pub fn find_stage(stages: &[Stage], name: &str, before: usize) -> Option<usize> {
    if let Ok(i) = name.parse::<usize>() {
        return (i < before && i < stages.len()).then_some(i);
    }
    stages[..before.min(stages.len())]
        .iter()
        .find(|s| s.name() == Some(name))
        .map(|s| s.index)
}

/// What `COPY --from=from` in stage `current` copies from: a stage defined before it (by name
/// or index), else an image. Naming the current stage or a later one is an error, as in
/// BuildKit.
pub fn copy_from(stages: &[Stage], from: &str, current: usize) -> Result<CopyFrom, String> {
    let name = from.to_ascii_lowercase();
    if let Ok(i) = name.parse::<usize>() {
        return match find_stage(stages, &name, current) {
            Some(i) => Ok(CopyFrom::Stage(i)),
            None if current == 0 => Err(format!(
                "COPY --from={from}: no stage is defined before this one"
            )),
            None => Err(format!(
                "COPY --from={from}: stage {i} is not defined before this one; use 0 to {}",
                current - 1
            )),
        };
    }
    match stages.iter().find(|s| s.name() == Some(&name)) {
        Some(s) if s.index < current => Ok(CopyFrom::Stage(s.index)),
        Some(_) => Err(format!(
            "COPY --from={from}: stage {name:?} must be defined before the stage that copies from it"
        )),
        None => Ok(CopyFrom::Image(from.to_string())),
    }
}

/// What stage `s` starts from, after expanding its FROM line with `vars`.
pub fn base_of(
    stages: &[Stage],
    s: &Stage,
    escape: char,
    vars: &[(String, String)],
) -> Result<Base, String> {
    let base = expand(&s.from.image, vars, escape).map_err(|e| e.0)?;
    if base.is_empty() {
        return Err(format!("FROM {}: the image name is empty", s.from.image));
    }
    if base.eq_ignore_ascii_case("scratch") {
        return Ok(Base::Scratch);
    }
    Ok(
        match find_stage(stages, &base.to_ascii_lowercase(), s.index) {
            Some(i) if base.parse::<usize>().is_err() => Base::Stage(i),
            _ => Base::Image(base),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::parse;

    #[test]
    fn only_needed_stages_in_waves() {
        let df = parse(
            "Dockerfile",
            "ARG BASE=debian\nFROM $BASE AS a\nFROM scratch AS unused\nFROM debian AS b\nFROM a AS final\nCOPY --from=b /x /x\n",
        )
        .expect("parse");
        let vars = vec![("BASE".to_string(), "debian".to_string())];
        let p = plan("Dockerfile", &df, None, &vars).expect("plan");
        assert_eq!(p.target, 3);
        assert_eq!(p.waves, vec![vec![0, 2], vec![3]]);
        let p = plan("Dockerfile", &df, Some("unused"), &vars).expect("plan");
        assert_eq!(p.waves, vec![vec![1]]);
        let e = plan("Dockerfile", &df, Some("nope"), &vars).expect_err("no such target");
        assert!(
            e.to_string().contains("stages are: a, unused, b, final"),
            "{e}"
        );
    }

    #[test]
    fn triggers_of_a_base_stage_run_in_the_stage_built_from_it() {
        let df = parse(
            "Dockerfile",
            "FROM scratch AS src\nFROM scratch AS base\nONBUILD COPY --from=src /x /x\nONBUILD RUN make\nFROM base\n",
        )
        .expect("parse");
        let p = plan("Dockerfile", &df, None, &[]).expect("plan");
        // The trigger's COPY --from makes the last stage need `src`; `base` does not.
        assert_eq!(p.waves, vec![vec![0, 1], vec![2]]);
        assert_eq!(
            declared_triggers(&p.stages[1]),
            vec!["COPY --from=src /x /x", "RUN make"]
        );
        let ins = trigger_instruction("RUN make", 5).expect("trigger");
        assert_eq!(
            (ins.line, ins.keyword(), ins.text.as_str()),
            (5, "RUN", "make")
        );
        assert_eq!(
            trigger_instruction("FROM x", 5).expect_err("FROM"),
            "ONBUILD trigger \"FROM x\": FROM is not allowed as an ONBUILD trigger"
        );
        assert!(trigger_instruction("", 5).is_err());
        assert!(trigger_instruction("RUN a\nRUN b", 5).is_err());
    }

    #[test]
    fn duplicate_stage_names_are_refused() {
        let df = parse("Dockerfile", "FROM scratch AS x\nFROM scratch AS X\n").expect("parse");
        let e = plan("Dockerfile", &df, None, &[]).expect_err("dup");
        assert_eq!(
            e.to_string(),
            "Dockerfile:2: stage name \"x\" is used twice"
        );
    }

    #[test]
    fn copy_from_must_name_an_earlier_stage() {
        let e = |text: &str| {
            let df = parse("Dockerfile", text).expect("parse");
            plan("Dockerfile", &df, None, &[])
                .expect_err(text)
                .to_string()
        };
        assert_eq!(
            e("FROM scratch AS a\nCOPY --from=B /x /x\nFROM scratch AS b\n"),
            "Dockerfile:2: COPY --from=B: stage \"b\" must be defined before the stage that copies from it"
        );
        assert_eq!(
            e("FROM scratch\nFROM scratch\nCOPY --from=1 /x /x\n"),
            "Dockerfile:3: COPY --from=1: stage 1 is not defined before this one; use 0 to 0"
        );
        assert_eq!(
            e("FROM scratch\nCOPY --from=0 /x /x\n"),
            "Dockerfile:2: COPY --from=0: no stage is defined before this one"
        );
        let df = parse("Dockerfile", "FROM scratch AS a\nFROM scratch\nCOPY --from=A /x /x\nCOPY --from=debian:bookworm /y /y\n").expect("parse");
        let p = plan("Dockerfile", &df, None, &[]).expect("plan");
        assert_eq!(p.waves, vec![vec![0], vec![1]]);
        assert_eq!(
            copy_from(&p.stages, "debian:bookworm", 1),
            Ok(CopyFrom::Image("debian:bookworm".into()))
        );
    }
}
