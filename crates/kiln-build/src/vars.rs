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
/// default in the instruction (expanded with `vars`), else the global ARG of that name; a name
/// with none of these stays unset (`None`), as in BuildKit.
pub(crate) fn arg_values(
    decls: &[ArgDecl],
    escape: char,
    vars: &[(String, String)],
    build_args: &[(String, String)],
    globals: &[(String, String)],
) -> Result<Vec<(String, Option<String>)>, String> {
    decls
        .iter()
        .map(|d| {
            let value = if let Some(v) = lookup(build_args, &d.name) {
                Some(v.to_string())
            } else if let Some(default) = &d.default {
                Some(expand(default, vars, escape).map_err(|e| e.0)?)
            } else {
                lookup(globals, &d.name).map(str::to_string)
            };
            Ok((d.name.clone(), value))
        })
        .collect()
}

/// The proxy build arguments every build predefines: usable in RUN without an ARG
/// instruction, and kept out of the image and the step cache's key unless an ARG declares them.
pub(crate) const PROXY_ARGS: [&str; 5] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
];

/// The environment a RUN step gets from the proxy build arguments among `build_args`: each
/// given in either case sets both spellings (`HTTP_PROXY` and `http_proxy`), as BuildKit's
/// proxy environment does. When several spellings are given, the one that sorts last wins.
pub(crate) fn proxy_env(build_args: &[(String, String)]) -> Vec<(String, String)> {
    let mut given: Vec<&(String, String)> = build_args
        .iter()
        .filter(|(k, _)| PROXY_ARGS.iter().any(|p| p.eq_ignore_ascii_case(k)))
        .collect();
    given.sort_by(|a, b| a.0.cmp(&b.0));
    let mut env = Vec::new();
    for name in PROXY_ARGS {
        let Some((_, v)) = given
            .iter()
            .rev()
            .find(|(k, _)| name.eq_ignore_ascii_case(k))
        else {
            continue;
        };
        if v.is_empty() {
            continue;
        }
        env.push((name.to_string(), v.clone()));
        env.push((name.to_ascii_lowercase(), v.clone()));
    }
    env
}

/// A RUN step's environment (`NAME=value` strings) with the proxy build arguments among
/// `build_args` added: they replace a variable of the same name, as BuildKit's executor
/// appends its proxy environment last.
pub(crate) fn with_proxy_env(mut env: Vec<String>, build_args: &[(String, String)]) -> Vec<String> {
    for (k, v) in proxy_env(build_args) {
        let entry = format!("{k}={v}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map(|(n, _)| n) == Some(k.as_str()))
        {
            Some(e) => *e = entry,
            None => env.push(entry),
        }
    }
    env
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
        let want: Vec<(String, Option<String>)> =
            [("A", "x-a"), ("B", "from-cli"), ("G", "global")]
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn an_arg_without_any_value_stays_unset() {
        let decls = vec![ArgDecl {
            name: "NAME".into(),
            default: None,
        }];
        let got = arg_values(&decls, '\\', &[], &vars(&[("OTHER", "x")]), &[]).expect("values");
        assert_eq!(got, vec![("NAME".to_string(), None)]);
        let got = arg_values(&decls, '\\', &[], &vars(&[("NAME", "")]), &[]).expect("values");
        assert_eq!(got, vec![("NAME".to_string(), Some(String::new()))]);
    }

    #[test]
    fn proxy_args_set_both_spellings() {
        let args = vars(&[
            ("http_proxy", "http://p:3128"),
            ("NO_PROXY", "localhost"),
            ("X", "1"),
        ]);
        assert_eq!(
            proxy_env(&args),
            vars(&[
                ("HTTP_PROXY", "http://p:3128"),
                ("http_proxy", "http://p:3128"),
                ("NO_PROXY", "localhost"),
                ("no_proxy", "localhost"),
            ])
        );
        let env = with_proxy_env(vec!["PATH=/bin".into(), "no_proxy=old".into()], &args);
        assert_eq!(
            env,
            vec![
                "PATH=/bin",
                "no_proxy=localhost",
                "HTTP_PROXY=http://p:3128",
                "http_proxy=http://p:3128",
                "NO_PROXY=localhost",
            ]
        );
        assert!(proxy_env(&vars(&[("PROXY", "x"), ("HTTP_PROXY", "")])).is_empty());
    }

    #[test]
    fn platforms_name_the_host() {
        let args = platform_args("arm64");
        assert_eq!(lookup(&args, "TARGETPLATFORM"), Some("linux/arm64"));
        let build = lookup(&args, "BUILDPLATFORM").unwrap_or("");
        assert!(build.len() > "linux/".len(), "{build}");
    }
}
