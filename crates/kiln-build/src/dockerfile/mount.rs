//! `RUN --mount` values, read as BuildKit reads them (its CSV fields, key aliases, Go-style
//! booleans, octal modes and size units): checked when the Dockerfile is read, parsed with
//! their variables expanded when the step runs.

/// The kind of a `RUN --mount` (`type=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MountType {
    /// A directory or file of the context, a stage or an image.
    Bind,
    /// A persistent directory shared across builds.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A secret given to the build (`--secret`).
    Secret,
    /// An SSH agent socket (kiln forwards none).
    Ssh,
}

impl MountType {
    /// The name as written in `type=`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// How concurrent builds share a cache mount (`sharing=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// Every step uses the same directory at once.
    Shared,
    /// A step that finds the directory in use gets a directory of its own.
    Private,
    /// A step waits until no other step uses the directory.
    Locked,
}

/// One `RUN --mount` value, its fields read as BuildKit reads them (`parseMount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunMount {
    /// `type=` (bind unless given).
    pub(crate) ty: MountType,
    /// `from=`: a stage or image.
    pub(crate) from: Option<String>,
    /// `source=` / `src=`.
    pub(crate) source: Option<String>,
    /// `target=` / `dst=` / `destination=`.
    pub(crate) target: Option<String>,
    /// Read-only: `ro`/`rw` when given, else true for bind and secret mounts.
    pub(crate) readonly: bool,
    /// `size=` of a tmpfs, in bytes.
    pub(crate) size: Option<u64>,
    /// `id=`.
    pub(crate) id: Option<String>,
    /// `sharing=` of a cache mount.
    pub(crate) sharing: Option<Sharing>,
    /// `required` of a secret.
    pub(crate) required: bool,
    /// `env=`: the secret as an environment variable.
    pub(crate) env: Option<String>,
    /// `mode=` (octal).
    pub(crate) mode: Option<u32>,
    /// `uid=`.
    pub(crate) uid: Option<u32>,
    /// `gid=`.
    pub(crate) gid: Option<u32>,
}

/// The keys a `--mount` value may use.
const MOUNT_KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "src",
    "target",
    "dst",
    "destination",
    "readonly",
    "ro",
    "readwrite",
    "rw",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "env",
];

/// Split a `--mount` value into its comma-separated fields, as a CSV record: a field may be
/// quoted (`"a,b"`, with `""` for a quote inside).
fn csv_fields(value: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("a quoted field is not closed; add the closing \"".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(c) => {
                    return Err(format!(
                        "{c:?} after the quoted field \"{field}\"; separate fields with commas"
                    ));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err(format!(
                            "a quote inside the field \"{field}\"; quote the whole field"
                        ));
                    }
                    Some(c) => field.push(c),
                }
            }
        }
        fields.push(field);
    }
}

/// A boolean as Go's strconv.ParseBool reads it.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// A size as docker's `RAMInBytes` reads it: a number, an optional space and an optional unit
/// (k, m, g, t, p: powers of 1024, optionally followed by `i` and `b`).
fn ram_bytes(v: &str) -> Option<u64> {
    let digits = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(digits);
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() || (num.contains('.') && frac.is_empty()) || frac.len() > 18 {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let frac_value: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let mut rest = unit.as_str();
    let mut mult = 1u64;
    if let Some(c) = rest.chars().next()
        && let Some(p) = "kmgtp".find(c)
    {
        mult = 1u64 << (10 * (p + 1));
        rest = &rest[1..];
    }
    rest = rest.strip_prefix('i').unwrap_or(rest);
    rest = rest.strip_prefix('b').unwrap_or(rest);
    if !rest.is_empty() {
        return None;
    }
    let scale = 10u128.pow(u32::try_from(frac.len()).ok()?);
    let part = u64::try_from(u128::from(frac_value) * u128::from(mult) / scale).ok()?;
    whole.checked_mul(mult)?.checked_add(part)
}

/// Read one `RUN --mount` value, each field's value passed through `expand` first (the
/// stage's variables, as BuildKit expands them when it dispatches the step). Errors name the
/// field and say what it takes.
pub(crate) fn parse_mount(
    value: &str,
    expand: &dyn Fn(&str) -> Result<String, String>,
) -> Result<RunMount, String> {
    let mut m = RunMount {
        ty: MountType::Bind,
        from: None,
        source: None,
        target: None,
        readonly: false,
        size: None,
        id: None,
        sharing: None,
        required: false,
        env: None,
        mode: None,
        uid: None,
        gid: None,
    };
    let mut readonly: Option<bool> = None;
    let mut size: Option<String> = None;
    let mut required = false;
    for field in csv_fields(value)? {
        let (key, v) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(v) = v else {
            match key.as_str() {
                "readonly" | "ro" => readonly = Some(true),
                "readwrite" | "rw" => readonly = Some(false),
                "required" => required = true,
                _ if MOUNT_KEYS.contains(&key.as_str()) => {
                    return Err(format!("{field}: the key needs a value, as in {key}=VALUE"));
                }
                _ => return Err(unknown_mount_key(&key, &field)),
            }
            continue;
        };
        if key == "from" && v.find('$').is_some_and(|i| i + 1 != v.len()) {
            return Err(format!(
                "{field}: from= does not expand variables; name the stage or image, or add a stage `FROM {v} AS NAME` and name it"
            ));
        }
        let v = if key == "from" {
            v.to_string()
        } else {
            expand(v)?
        };
        let bool_of = |v: &str| go_bool(v).ok_or_else(|| format!("{key}={v}: use true or false"));
        let number = |v: &str, radix: u32, what: &str| {
            u32::from_str_radix(v, radix).map_err(|_| format!("{key}={v}: use {what}"))
        };
        match key.as_str() {
            "type" => {
                m.ty = match v.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        return Err(format!(
                            "type={v}: unknown mount type; use bind, cache, tmpfs, secret or ssh"
                        ));
                    }
                }
            }
            "from" => m.from = Some(v),
            "source" | "src" => m.source = Some(v),
            "target" | "dst" | "destination" => m.target = Some(v),
            "readonly" | "ro" => readonly = Some(bool_of(&v)?),
            "readwrite" | "rw" => readonly = Some(!bool_of(&v)?),
            "required" => required = bool_of(&v)?,
            "size" => size = Some(v),
            "id" => m.id = Some(v),
            "sharing" => {
                m.sharing = Some(match v.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => return Err(format!("sharing={v}: use shared, private or locked")),
                })
            }
            "mode" => m.mode = Some(number(&v, 8, "an octal mode such as 0755")?),
            "uid" => m.uid = Some(number(&v, 10, "a numeric user id")?),
            "gid" => m.gid = Some(number(&v, 10, "a numeric group id")?),
            "env" => m.env = Some(v),
            _ => return Err(unknown_mount_key(&key, &field)),
        }
    }
    let ty = m.ty.name();
    if required && !matches!(m.ty, MountType::Secret | MountType::Ssh) {
        return Err(format!(
            "required: only secret and ssh mounts take it, not type={ty}"
        ));
    }
    m.required = required;
    if let Some(v) = size {
        if m.ty != MountType::Tmpfs {
            return Err(format!(
                "size={v}: only tmpfs mounts take a size, not type={ty}"
            ));
        }
        m.size =
            Some(ram_bytes(&v).ok_or_else(|| format!("size={v}: use a size such as 64m or 1g"))?);
    }
    if !matches!(m.ty, MountType::Secret | MountType::Ssh | MountType::Cache) {
        for (key, given) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if given {
                return Err(format!(
                    "{key}: only cache, secret and ssh mounts take it, not type={ty}"
                ));
            }
        }
    }
    if m.sharing.is_some() && m.ty != MountType::Cache {
        return Err(format!("sharing: only cache mounts take it, not type={ty}"));
    }
    if m.env.is_some() && m.ty != MountType::Secret {
        return Err(format!("env: only secret mounts take it, not type={ty}"));
    }
    m.readonly = readonly.unwrap_or(!matches!(m.ty, MountType::Cache | MountType::Tmpfs));
    match m.ty {
        MountType::Secret => {
            if m.from.is_some() {
                return Err(
                    "from: a secret mount takes no from=; its content comes from --secret".into(),
                );
            }
            if m.source.is_some() && m.id.is_some() {
                return Err("source and id: give the secret's id once (id=ID)".into());
            }
            if m.source.is_none() && m.target.is_none() && m.id.is_none() {
                return Err("a secret mount needs id=ID (or target=PATH)".into());
            }
        }
        MountType::Bind | MountType::Cache | MountType::Tmpfs => {
            if m.target.as_deref().is_none_or(str::is_empty) {
                return Err(format!(
                    "target: a {ty} mount needs target=PATH, where the step sees it"
                ));
            }
        }
        MountType::Ssh => {
            return Err(
                "type=ssh: kiln forwards no SSH agent into RUN steps; give the key as a secret (type=secret) or fetch in the context"
                    .into(),
            );
        }
    }
    if m.ty == MountType::Tmpfs && (m.from.is_some() || m.source.is_some()) {
        return Err("from and source: a tmpfs mount starts empty; drop them".into());
    }
    Ok(m)
}

/// Check a `--mount` value when the Dockerfile is read: fully when it names no variable,
/// else its keys only (the values are expanded when the step runs).
pub(crate) fn check_mount(value: &str) -> Result<(), String> {
    if !value.contains('$') {
        return parse_mount(value, &|v| Ok(v.to_string())).map(|_| ());
    }
    for field in csv_fields(value)? {
        let (key, v) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        if !MOUNT_KEYS.contains(&key.as_str()) {
            return Err(unknown_mount_key(&key, &field));
        }
        if key == "from" && v.and_then(|v| v.find('$').map(|i| i + 1 != v.len())) == Some(true) {
            return parse_mount(&field, &|v| Ok(v.to_string())).map(|_| ());
        }
    }
    Ok(())
}

/// The `from=` of a `--mount` value, if any (it never names variables).
pub(crate) fn mount_from(value: &str) -> Option<String> {
    csv_fields(value)
        .ok()?
        .into_iter()
        .rev()
        .find_map(|f| {
            f.split_once('=')
                .filter(|(k, _)| k.eq_ignore_ascii_case("from"))
                .map(|(_, v)| v.to_string())
        })
        .filter(|v| !v.is_empty())
}

fn unknown_mount_key(key: &str, field: &str) -> String {
    let hint = MOUNT_KEYS
        .iter()
        .map(|k| (strsim::levenshtein(k, key), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean {k}?)"))
        .unwrap_or_default();
    format!(
        "{field}: unknown key {key:?}{hint}; keys are type, from, source, target, ro, rw, id, sharing, required, size, mode, uid, gid, env"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(v: &str) -> Result<RunMount, String> {
        parse_mount(v, &|x| Ok(x.replace("$DIR", "/cache/dir")))
    }

    #[test]
    fn mounts_read_as_buildkit_reads_them() {
        let m = mount("target=/src").expect("bind");
        assert_eq!(m.ty, MountType::Bind);
        assert!(m.readonly, "binds are read-only unless rw");
        assert_eq!(m.target.as_deref(), Some("/src"));
        let m = mount("type=bind,src=sub,dst=/src,from=build,rw").expect("rw bind");
        assert!(!m.readonly);
        assert_eq!(
            (m.source.as_deref(), m.from.as_deref()),
            (Some("sub"), Some("build"))
        );
        let m = mount("TYPE=Cache,Target=$DIR,id=cargo,sharing=locked,mode=0700,uid=1000,gid=100")
            .expect("cache");
        assert_eq!(m.ty, MountType::Cache);
        assert!(!m.readonly, "caches are writable unless ro");
        assert_eq!(m.target.as_deref(), Some("/cache/dir"));
        assert_eq!(m.sharing, Some(Sharing::Locked));
        assert_eq!((m.mode, m.uid, m.gid), (Some(0o700), Some(1000), Some(100)));
        let m = mount("type=cache,target=/c,ro=true").expect("ro cache");
        assert!(m.readonly);
        let m = mount("type=tmpfs,target=/t,size=64m").expect("tmpfs");
        assert_eq!(m.size, Some(64 << 20));
        assert_eq!(
            mount("type=tmpfs,target=/t,size=1.5k").expect("k").size,
            Some(1536)
        );
        assert_eq!(
            mount("type=tmpfs,target=/t,size=4096").expect("bytes").size,
            Some(4096)
        );
        assert_eq!(
            mount("type=tmpfs,target=/t,size=10 MiB").expect("MiB").size,
            Some(10 << 20)
        );
        let m = mount("type=secret,id=tok,required,env=TOKEN").expect("secret");
        assert!(m.required && m.readonly);
        assert_eq!(m.env.as_deref(), Some("TOKEN"));
        assert!(mount("type=secret,target=/run/x,required=false").is_ok());
        let m = mount("\"type=bind\",\"source=a,b\",target=/x").expect("quoted");
        assert_eq!(m.source.as_deref(), Some("a,b"));
    }

    #[test]
    fn bad_mounts_name_the_key() {
        for (value, says) in [
            ("type=volume,target=/x", "type=volume: unknown mount type"),
            ("type=cache", "target: a cache mount needs target=PATH"),
            (
                "type=bind,target=",
                "target: a bind mount needs target=PATH",
            ),
            (
                "target=/x,sharing=locked",
                "sharing: only cache mounts take it",
            ),
            (
                "type=cache,target=/x,sharing=all",
                "sharing=all: use shared, private or locked",
            ),
            (
                "type=cache,target=/x,mode=999",
                "mode=999: use an octal mode",
            ),
            (
                "type=cache,target=/x,uid=me",
                "uid=me: use a numeric user id",
            ),
            (
                "type=cache,target=/x,gid=-1",
                "gid=-1: use a numeric group id",
            ),
            (
                "target=/x,mode=0755",
                "mode: only cache, secret and ssh mounts take it",
            ),
            ("type=tmpfs,target=/t,size=lots", "size=lots: use a size"),
            (
                "type=cache,target=/t,size=1m",
                "size=1m: only tmpfs mounts take a size",
            ),
            (
                "target=/x,required",
                "required: only secret and ssh mounts take it",
            ),
            ("target=/x,ro=maybe", "ro=maybe: use true or false"),
            (
                "target=/x,readonlyy",
                "unknown key \"readonlyy\" (did you mean readonly?)",
            ),
            (
                "target=/x,sorce=a",
                "unknown key \"sorce\" (did you mean source?)",
            ),
            ("target", "target: the key needs a value"),
            ("type=secret", "a secret mount needs id=ID"),
            ("type=secret,id=a,src=b", "source and id"),
            (
                "type=secret,id=a,from=x",
                "from: a secret mount takes no from=",
            ),
            ("type=ssh", "type=ssh: kiln forwards no SSH agent"),
            ("target=/x,env=A", "env: only secret mounts take it"),
            (
                "type=tmpfs,target=/t,source=a",
                "a tmpfs mount starts empty",
            ),
            (
                "target=/x,from=$STAGE_NAME",
                "from= does not expand variables",
            ),
            ("target=/x,\"src=a", "a quoted field is not closed"),
            ("target=/x,src=a\"b", "a quote inside the field"),
        ] {
            let e = mount(value).expect_err(value);
            assert!(e.contains(says), "{value}: {e}");
        }
    }

    #[test]
    fn mounts_with_variables_are_checked_for_keys_only() {
        assert!(check_mount("type=cache,target=$HOME/.cache").is_ok());
        assert!(check_mount("type=$T,target=/x").is_ok());
        let e = check_mount("type=cache,tagret=$X").expect_err("typo");
        assert!(
            e.contains("unknown key \"tagret\" (did you mean target?)"),
            "{e}"
        );
        let e = check_mount("target=/x,from=$S").expect_err("from");
        assert!(e.contains("from= does not expand variables"), "{e}");
        let e = check_mount("type=cache").expect_err("no target");
        assert!(e.contains("needs target=PATH"), "{e}");
        assert_eq!(
            mount_from("type=bind,FROM=build,target=/x").as_deref(),
            Some("build")
        );
        assert_eq!(mount_from("type=cache,target=/x"), None);
    }
}
