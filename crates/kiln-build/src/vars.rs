//! Build variables: the ARGs every build predefines (the platforms) and the values the names of
//! an ARG instruction take.

use crate::dockerfile::ArgDecl;
use crate::shell_lex::{expand, lookup};

/// The architecture kiln runs on, in Go's naming.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => kiln_oci::spec::normalize_arch(other),
    }
}

/// The predefined platform ARGs for building `arch` on this machine.
pub fn platform_args(arch: &str) -> Vec<(String, String)> {
    let host = host_arch().to_string();
    let arch = kiln_oci::spec::normalize_arch(arch).to_string();
    vec![
        ("TARGETPLATFORM".into(), format!("linux/{arch}")),
        ("TARGETOS".into(), "linux".into()),
        ("TARGETARCH".into(), arch),
        ("TARGETVARIANT".into(), String::new()),
        ("BUILDPLATFORM".into(), format!("linux/{host}")),
        ("BUILDOS".into(), "linux".into()),
        ("BUILDARCH".into(), host),
        ("BUILDVARIANT".into(), String::new()),
    ]
}

/// The names and values an ARG instruction declares. A value comes from `--build-arg`, else the
/// default in the instruction (expanded with `vars`), else the global ARG of that name.
pub(crate) fn arg_values(
    decls: &[ArgDecl],
    escape: char,
    vars: &[(String, String)],
    build_args: &[(String, String)],
    globals: &[(String, String)],
) -> Result<Vec<(String, String)>, String> {
    decls
        .iter()
        .map(|d| {
            let value = if let Some(v) = lookup(build_args, &d.name) {
                v.to_string()
            } else if let Some(default) = &d.default {
                expand(default, vars, escape).map_err(|e| e.0)?
            } else {
                lookup(globals, &d.name).unwrap_or("").to_string()
            };
            Ok((d.name.clone(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn build_args_then_defaults_then_globals() {
        let decls = vec![
            ArgDecl {
                name: "A".into(),
                default: Some("${X}-a".into()),
            },
            ArgDecl {
                name: "B".into(),
                default: Some("b".into()),
            },
            ArgDecl {
                name: "G".into(),
                default: None,
            },
        ];
        let got = arg_values(
            &decls,
            '\\',
            &vars(&[("X", "x")]),
            &vars(&[("B", "from-cli")]),
            &vars(&[("G", "global")]),
        )
        .expect("values");
        assert_eq!(
            got,
            vars(&[("A", "x-a"), ("B", "from-cli"), ("G", "global")])
        );
    }

    #[test]
    fn platforms_name_the_host() {
        let args = platform_args("arm64");
        assert_eq!(lookup(&args, "TARGETPLATFORM"), Some("linux/arm64"));
        let build = lookup(&args, "BUILDPLATFORM").unwrap_or("");
        assert!(build.len() > "linux/".len(), "{build}");
    }
}
