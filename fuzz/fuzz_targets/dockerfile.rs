//! Dockerfiles and Dockerfile word expansion: never a panic, whatever the text. Every word a
//! parsed instruction keeps for build time is expanded, and every flag value deferred to build
//! time is resolved, as a build would.
#![no_main]
use kiln_build::dockerfile::{self, Kind, Source};
use kiln_build::shell_lex;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars = vec![("A".to_string(), "apple".to_string())];
    if let Ok(df) = dockerfile::parse("Dockerfile", text) {
        let esc = df.escape;
        let expand = |raw: &str| shell_lex::expand(raw, &vars, esc).map_err(|e| e.0);
        for ins in &df.instructions {
            assert!(ins.line >= 1, "line numbers start at 1");
            for word in words(&ins.kind) {
                let _ = expand(&word);
            }
            match &ins.kind {
                Kind::From(f) => {
                    if let Some(p) = &f.platform {
                        let _ = p.resolve(expand);
                    }
                }
                Kind::Copy(c) => {
                    if let Some(m) = &c.files.chmod {
                        let _ = m.resolve(expand);
                    }
                }
                Kind::Add(a) => {
                    if let Some(m) = &a.files.chmod {
                        let _ = m.resolve(expand);
                    }
                    if let Some(c) = &a.checksum {
                        let _ = c.resolve(expand);
                    }
                }
                _ => {}
            }
            for source in sources(&ins.kind) {
                if let Source::Heredoc(h) = source {
                    let _ = shell_lex::expand_heredoc(&h.content, &vars, esc);
                }
            }
        }
    }
    let _ = shell_lex::expand(text, &vars, '\\');
    let _ = shell_lex::expand_heredoc(text, &vars, '`');
});

/// The words an instruction keeps unexpanded for build time.
fn words(kind: &Kind) -> Vec<String> {
    let mut out = Vec::new();
    match kind {
        Kind::From(f) => out.push(f.image.clone()),
        Kind::Copy(c) => {
            out.push(c.files.dest.clone());
            out.extend(c.files.chown.clone());
        }
        Kind::Add(a) => {
            out.push(a.files.dest.clone());
            out.extend(a.files.chown.clone());
        }
        Kind::Env(pairs) | Kind::Label(pairs) => {
            for p in pairs {
                out.push(p.key.clone());
                out.push(p.value.clone());
            }
        }
        Kind::Arg(decls) => out.extend(decls.iter().filter_map(|d| d.default.clone())),
        Kind::Workdir(w) | Kind::User(w) | Kind::StopSignal(w) => out.push(w.clone()),
        Kind::Expose(v) | Kind::Volume(v) => out.extend(v.iter().cloned()),
        _ => {}
    }
    for source in sources(kind) {
        if let Source::Path(p) = source {
            out.push(p.clone());
        }
    }
    out
}

fn sources(kind: &Kind) -> &[Source] {
    match kind {
        Kind::Copy(c) => &c.files.sources,
        Kind::Add(a) => &a.files.sources,
        _ => &[],
    }
}
