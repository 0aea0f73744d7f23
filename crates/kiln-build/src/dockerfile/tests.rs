use super::*;

fn one(text: &str) -> Instruction {
    let df = parse("Dockerfile", &format!("FROM scratch\n{text}")).expect("parse");
    df.instructions[1].clone()
}

/// The message of the error parsing `text`, which must fail.
fn error(text: &str) -> String {
    parse("Dockerfile", text).expect_err(text).to_string()
}

#[test]
fn continuations_comments_and_keywords() {
    let df = parse(
        "Dockerfile",
        "# syntax=docker/dockerfile:1\nFROM alpine AS build\n\nrun echo a \\\n# comment\n  && echo b\nCMD [\"sh\", \"-c\"]\n",
    )
    .expect("parse");
    assert_eq!(df.instructions.len(), 3);
    assert_eq!(df.instructions[1].keyword(), "RUN");
    assert_eq!(df.instructions[1].line, 4);
    let Kind::Run(run) = &df.instructions[1].kind else {
        panic!("not RUN: {:?}", df.instructions[1]);
    };
    assert_eq!(run.command, Args::Shell("echo a   && echo b".into()));
    assert_eq!(
        df.instructions[2].kind,
        Kind::Cmd(Args::Exec(vec!["sh".into(), "-c".into()]))
    );
    let Kind::From(from) = &df.instructions[0].kind else {
        panic!("not FROM");
    };
    assert_eq!(
        (from.image.as_str(), from.name.as_deref()),
        ("alpine", Some("build"))
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
    let Kind::Copy(copy) = &df.instructions[1].kind else {
        panic!("not COPY");
    };
    assert_eq!(copy.files.sources, vec![Source::Path("a".into())]);
    assert_eq!(copy.files.dest, "C:\\dir");
}

#[test]
fn typed_flags_and_heredocs() {
    let i = one("COPY --from=build --chmod=755 --link <<EOF /x\nhello $X\nEOF\n");
    let Kind::Copy(copy) = &i.kind else {
        panic!("not COPY");
    };
    assert_eq!(copy.from.as_deref(), Some("build"));
    assert_eq!(copy.files.chmod, Some(Deferred::Known(Mode(0o755))));
    assert!(copy.files.link);
    assert_eq!(i.text, "<<EOF /x");
    let Source::Heredoc(h) = &copy.files.sources[0] else {
        panic!("not a heredoc source");
    };
    assert_eq!(h.content, "hello $X\n");
    assert!(h.expand);
    let i = one("RUN --network=none <<-'EOT' sh\n\techo $HOME\n\tEOT\n");
    let Kind::Run(run) = &i.kind else {
        panic!("not RUN");
    };
    assert_eq!(run.network, RunNetwork::None);
    assert_eq!(run.security, RunSecurity::Sandbox);
    assert_eq!(run.heredocs[0].content, "echo $HOME\n");
    assert!(!run.heredocs[0].expand);
    let i = one("RUN --security=insecure mount -t tmpfs none /mnt\n");
    let Kind::Run(run) = &i.kind else {
        panic!("not RUN");
    };
    assert_eq!(run.security, RunSecurity::Insecure);
}

#[test]
fn values_with_variables_are_checked_at_build_time() {
    let i = one("ADD --chmod=$MODE --checksum=${SUM} $URL /x\n");
    let Kind::Add(add) = &i.kind else {
        panic!("not ADD");
    };
    assert_eq!(add.files.chmod, Some(Deferred::Expand("$MODE".into())));
    assert_eq!(add.checksum, Some(Deferred::Expand("${SUM}".into())));
    let i = one("FROM --platform=$BUILDPLATFORM scratch AS b\n");
    let Kind::From(from) = &i.kind else {
        panic!("not FROM");
    };
    assert_eq!(
        from.platform,
        Some(Deferred::Expand("$BUILDPLATFORM".into()))
    );
}

#[test]
fn instructions_are_typed() {
    assert_eq!(
        one("ENV A=1 B=\"two words\"\n").kind,
        Kind::Env(vec![
            Pair {
                key: "A".into(),
                value: "1".into()
            },
            Pair {
                key: "B".into(),
                value: "\"two words\"".into()
            },
        ])
    );
    assert_eq!(
        one("LABEL legacy value here\n").kind,
        Kind::Label(vec![Pair {
            key: "legacy".into(),
            value: "value here".into()
        }])
    );
    assert_eq!(
        one("ARG A B=2\n").kind,
        Kind::Arg(vec![
            ArgDecl {
                name: "A".into(),
                default: None
            },
            ArgDecl {
                name: "B".into(),
                default: Some("2".into())
            },
        ])
    );
    assert_eq!(
        one("VOLUME /data [\"/logs\"]\n").kind,
        Kind::Volume(vec!["/data".into(), "[\"/logs\"]".into()])
    );
    let Kind::Healthcheck(Healthcheck::Check(check)) =
        one("HEALTHCHECK --interval=30s --retries=3 cmd [\"/check\", \"-q\"]\n").kind
    else {
        panic!("not a health check");
    };
    assert_eq!(check.test, vec!["CMD", "/check", "-q"]);
    assert_eq!(check.interval, std::time::Duration::from_secs(30));
    assert_eq!(check.retries, 3);
    assert_eq!(
        one("HEALTHCHECK NONE\n").kind,
        Kind::Healthcheck(Healthcheck::None)
    );
    assert_eq!(
        one("ONBUILD RUN <<EOF\necho hi\nEOF\n").kind,
        Kind::Onbuild("RUN <<EOF\necho hi\nEOF".into())
    );
}

#[test]
fn errors_name_the_line() {
    assert_eq!(
        error("FROM scratch\nCOPPY a b\n"),
        "Dockerfile:2: unknown instruction \"COPPY\": did you mean COPY?"
    );
    assert!(
        error("RUN true\nFROM scratch\n").starts_with("Dockerfile:1: RUN before the first FROM")
    );
    assert!(error("FROM scratch\nRUN <<EOF\nno end\n").contains("never closed"));
}

#[test]
fn flag_errors_name_the_line_and_the_flag() {
    let cases = [
        (
            "FROM scratch\n\nCOPY --chmod=abc a /b\n",
            "Dockerfile:3: COPY --chmod=abc: use an octal mode from 0 to 7777, such as 755",
        ),
        (
            "FROM scratch\nADD --from=build a /b\n",
            "Dockerfile:2: ADD --from: --from is a flag of COPY, not of ADD; ADD accepts --chown=USER[:GROUP], --chmod=MODE, --checksum=sha256:HEX, --link",
        ),
        (
            "FROM scratch\nRUN --netwrk=none true\n",
            "Dockerfile:2: RUN --netwrk: unknown flag (did you mean --network?); RUN accepts --network=default|none|host, --security=sandbox|insecure, --mount=type=TYPE,target=PATH[,...]",
        ),
        (
            "FROM scratch\nRUN --network=bridge true\n",
            "Dockerfile:2: RUN --network=bridge: use default, none or host",
        ),
        (
            "FROM scratch\nENV --x=1 A=b\n",
            "Dockerfile:2: ENV --x: unknown flag; ENV takes no flags",
        ),
        (
            "FROM scratch\nCMD --help\n",
            "Dockerfile:2: CMD --help: unknown flag; CMD takes no flags",
        ),
        (
            "FROM scratch\nCOPY --from a /b\n",
            "Dockerfile:2: COPY --from: the flag needs a value, as in --from=STAGE|IMAGE",
        ),
        (
            "FROM scratch\nCOPY --from=$STAGE a /b\n",
            "Dockerfile:2: COPY --from=$STAGE: variables are not expanded in --from; name a stage instead (FROM ${IMAGE} AS name, with a global ARG)",
        ),
        (
            "FROM scratch\nADD --checksum=abc http://x/y /z\n",
            "Dockerfile:2: ADD --checksum=abc: use sha256: and 64 lower-case hex digits",
        ),
        (
            "FROM --platform=windows/amd64 scratch\n",
            "Dockerfile:1: FROM --platform=windows/amd64: kiln builds linux images, not windows; use linux/ARCH[/VARIANT], such as linux/amd64 or linux/arm64",
        ),
        (
            "FROM scratch\nHEALTHCHECK --interval=5 CMD true\n",
            "Dockerfile:2: HEALTHCHECK --interval=5: use a number and a unit (ns, us, ms, s, m, h), such as 30s or 1m30s",
        ),
        (
            "FROM scratch\nHEALTHCHECK --retries=-1 CMD true\n",
            "Dockerfile:2: HEALTHCHECK --retries=-1: retries cannot be negative",
        ),
        (
            "FROM scratch\nRUN --mount=type=cache true\n",
            "Dockerfile:2: RUN --mount=type=cache: target: a cache mount needs target=PATH, where the step sees it",
        ),
        (
            "FROM scratch\nRUN --security=unconfined true\n",
            "Dockerfile:2: RUN --security=unconfined: use sandbox or insecure",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error(text), want, "{text}");
    }
    // A bad flag on a continued instruction names the line it starts on.
    assert!(
        error("FROM scratch\nCOPY \\\n  --link=maybe \\\n  a /b\n")
            .starts_with("Dockerfile:2: COPY --link=maybe:")
    );
}

#[test]
fn missing_arguments_are_parse_errors() {
    let cases = [
        (
            "FROM scratch\nCOPY a\n",
            "Dockerfile:2: COPY needs at least one source and a destination: COPY SRC... DEST",
        ),
        (
            "FROM scratch\nADD --chown=1 x\n",
            "Dockerfile:2: ADD needs at least one source and a destination: ADD SRC... DEST",
        ),
        (
            "FROM scratch\nRUN []\n",
            "Dockerfile:2: RUN needs a command",
        ),
        (
            "FROM scratch\nWORKDIR\n",
            "Dockerfile:2: WORKDIR needs a path, as in WORKDIR /app",
        ),
        ("FROM scratch\nENV\n", "Dockerfile:2: ENV needs KEY=VALUE"),
        (
            "FROM scratch\nENV A\n",
            "Dockerfile:2: ENV A needs a value: ENV A=VALUE",
        ),
        (
            "FROM scratch\nLABEL =x\n",
            "Dockerfile:2: LABEL =x: the key is empty",
        ),
        (
            "FROM scratch\nARG\n",
            "Dockerfile:2: ARG needs a name, as in ARG NAME or ARG NAME=default",
        ),
        (
            "FROM scratch\nSHELL /bin/sh -c\n",
            "Dockerfile:2: SHELL needs the JSON form, as in SHELL [\"/bin/bash\", \"-c\"]",
        ),
        (
            "FROM scratch\nEXPOSE 80/foo\n",
            "Dockerfile:2: EXPOSE 80/foo: use PORT[/tcp|/udp|/sctp] or FIRST-LAST[/PROTO], such as 80/tcp",
        ),
        (
            "FROM scratch\nVOLUME [\"\"]\n",
            "Dockerfile:2: VOLUME with an empty path",
        ),
        (
            "FROM scratch\nHEALTHCHECK CMD\n",
            "Dockerfile:2: HEALTHCHECK CMD needs a command",
        ),
        (
            "FROM scratch\nHEALTHCHECK CMD [ ]\n",
            "Dockerfile:2: HEALTHCHECK CMD needs a command",
        ),
        (
            "FROM scratch\nHEALTHCHECK NONE x\n",
            "Dockerfile:2: HEALTHCHECK NONE takes no flags and no arguments",
        ),
        (
            "FROM scratch\nONBUILD FROM x\n",
            "Dockerfile:2: FROM is not allowed as an ONBUILD trigger",
        ),
        (
            "FROM scratch AS 1x\n",
            "Dockerfile:1: invalid stage name \"1x\": start with a letter, then use letters, digits, -, _ or .",
        ),
        (
            "FROM a b\n",
            "Dockerfile:1: FROM a b: expected FROM [--platform=P] IMAGE [AS NAME]",
        ),
        (
            "FROM scratch\nCOPY a <<EOF\nx\nEOF\n",
            "Dockerfile:2: COPY <<EOF: a heredoc cannot be the destination",
        ),
        (
            "FROM scratch\nADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 a b /c\n",
            "Dockerfile:2: ADD --checksum: give a single http:// or https:// source",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error(text), want, "{text}");
    }
}

#[test]
fn run_command_lines() {
    let shell = ["/bin/sh".to_string(), "-c".to_string()];
    let argv = |text: &str| {
        let Kind::Run(run) = one(text).kind else {
            panic!("not RUN: {text}");
        };
        run.argv(&shell)
    };
    assert_eq!(argv("RUN [\"ls\", \"-l\"]\n"), vec!["ls", "-l"]);
    assert_eq!(
        argv("RUN echo $HOME\n"),
        vec!["/bin/sh", "-c", "echo $HOME"]
    );
    assert_eq!(
        argv("RUN <<EOF\necho a\nEOF\n"),
        vec!["/bin/sh", "-c", "echo a\n"]
    );
    assert_eq!(
        argv("RUN python3 <<'PY'\nprint(1)\nPY\n"),
        vec!["/bin/sh", "-c", "python3 <<'PY'\nprint(1)\nPY"]
    );
}

#[test]
fn exec_form_reads_no_heredocs() {
    let i = one("RUN [\"sh\", \"-c\", \"cat <<EOF\"]\n");
    let Kind::Run(run) = &i.kind else {
        panic!("not RUN");
    };
    assert!(run.heredocs.is_empty());
}

#[test]
fn not_json_falls_back_to_shell() {
    let Kind::Run(run) = one("RUN [not json\n").kind else {
        panic!("not RUN");
    };
    assert_eq!(run.command, Args::Shell("[not json".into()));
}

proptest::proptest! {
    #[test]
    fn parser_never_panics(s in "\\PC{0,300}") {
        let _ = parse("fuzz", &s);
    }

    #[test]
    fn parser_never_panics_on_dockerfile_like_text(
        s in "(FROM|RUN|COPY|ADD|ENV|ARG|HEALTHCHECK|ONBUILD|<<EOF|EOF|--from=|--chmod=|--network=|--link|--platform=|--checksum=|--interval=|\\[\"|\"\\]|#|\\\\|`|'|\n| |[a-z0-9$=:{}/]){0,80}"
    ) {
        if let Ok(df) = parse("fuzz", &s) {
            proptest::prop_assert!(df.instructions.iter().any(|i| matches!(i.kind, Kind::From(_))));
            for i in &df.instructions {
                proptest::prop_assert!(i.line >= 1 && i.line <= s.lines().count());
            }
        }
    }

    /// Any octal mode written in `--chmod` is the mode parsed.
    #[test]
    fn chmod_values_round_trip(mode in 0u32..=0o7777) {
        let i = one(&format!("COPY --chmod={mode:o} a /b\n"));
        let Kind::Copy(copy) = i.kind else {
            return Err(proptest::test_runner::TestCaseError::fail("not COPY"));
        };
        proptest::prop_assert_eq!(copy.files.chmod, Some(Deferred::Known(Mode(mode))));
    }
}
