//! The manifest written into the image (`files: - metadata: yaml|json`), with image references
//! expanded to their full names, in LinuxKit's layout.

use kiln_manifest::{Image, Manifest};
use kiln_oci::Reference;

fn expand(r: &str) -> String {
    r.parse::<Reference>()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| r.to_string())
}

/// The manifest with every image reference expanded (`alpine` -> `docker.io/library/alpine`).
pub fn expanded(m: &Manifest) -> Manifest {
    let mut m = m.clone();
    if !m.kernel.image.is_empty() {
        m.kernel.image = expand(&m.kernel.image);
    }
    for i in &mut m.init {
        *i = expand(i);
    }
    let fix = |list: &mut Vec<Image>| {
        list.iter_mut()
            .for_each(|img| img.image = expand(&img.image))
    };
    fix(&mut m.onboot);
    fix(&mut m.onshutdown);
    fix(&mut m.services);
    m
}

/// Render as `yaml` or `json` (the caller validated the kind).
pub fn render(m: &Manifest, kind: &str) -> String {
    let m = expanded(m);
    if kind == "json" {
        let mut value = serde_json::to_value(&m).unwrap_or_default();
        go_nil_lists(&mut value);
        String::from_utf8(crate::oci_config::to_go_json(&value)).unwrap_or_default()
    } else {
        double_quoted(&serde_norway::to_string(&m).unwrap_or_default())
    }
}

/// LinuxKit's manifest sections are Go slices without `omitempty`: a section the manifest
/// leaves out is a nil slice, which Go's JSON encoder writes as `null`.
fn go_nil_lists(value: &mut serde_json::Value) {
    const SECTIONS: [&str; 6] = [
        "init",
        "onboot",
        "onshutdown",
        "services",
        "files",
        "volumes",
    ];
    if let Some(top) = value.as_object_mut() {
        for section in SECTIONS {
            if let Some(v) = top.get_mut(section)
                && v.as_array().is_some_and(Vec::is_empty)
            {
                *v = serde_json::Value::Null;
            }
        }
    }
}

/// LinuxKit writes this file with Go's yaml.v2, which double-quotes the scalars that need quoting
/// where serde_norway single-quotes them: rewrite `'...'` values (always whole, one-line values
/// in block style) as `"..."` so the file is byte-identical.
fn double_quoted(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    for line in yaml.lines() {
        let value_start = line.find(": '").map(|i| i + 2).or_else(|| {
            let trimmed = line.trim_start();
            trimmed
                .starts_with("- '")
                .then(|| line.len() - trimmed.len() + 2)
        });
        match value_start {
            Some(i) if line.len() >= i + 2 && line.ends_with('\'') => {
                let inner = line[i + 1..line.len() - 1].replace("''", "'");
                out.push_str(&line[..i]);
                out.push_str(&serde_json::to_string(&inner).unwrap_or_default());
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn single_to_double_quotes() {
        assert_eq!(
            super::double_quoted("a: '0644'\n- 'it''s'\nb: plain\n"),
            "a: \"0644\"\n- \"it's\"\nb: plain\n"
        );
    }
}
