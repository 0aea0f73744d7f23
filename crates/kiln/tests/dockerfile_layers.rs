//! Layers and history of images `kiln image build` writes, which the Dockerfile suite does not
//! compare: a RUN that changes nothing adds no layer (its history entry is an empty layer), two
//! steps whose layers are byte-identical still build, the proxy build arguments reach RUN but
//! not the image or the step cache's key, and the ONBUILD triggers of a base image run first
//! and are not passed on.

mod common;

use common::{kiln, shared_store};
use kiln_oci::{Reference, Store};
use serde_json::Value;
use std::path::Path;
use std::process::Output;

/// Build `dockerfile` (its context holding `files`) as `tag` into `cache` with `args`; returns
/// the output after checking that the build succeeded.
fn build(
    cache: &Path,
    tag: &str,
    dockerfile: &str,
    files: &[(&str, &str)],
    args: &[&str],
) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write context file");
    }
    let out = kiln()
        .args([
            "image",
            "build",
            "--progress",
            "plain",
            "-t",
            tag,
            "--cache",
        ])
        .arg(cache)
        .args(args)
        .arg(dir.path())
        .output()
        .expect("spawn kiln");
    assert!(
        out.status.success(),
        "building {tag} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The image config and the number of layers in the manifest of `tag`.
fn image(cache: &Path, tag: &str) -> (Value, usize) {
    let store = Store::open(cache).expect("store");
    let r: Reference = tag.parse().expect("reference");
    let img = store
        .resolve(&r, kiln_oci::spec::normalize_arch(""))
        .expect("built image");
    let d: kiln_oci::Digest = img.manifest.config.digest.parse().expect("digest");
    let raw = store.read_json_blob(&d, "config").expect("config");
    (
        serde_json::from_slice(&raw).expect("config json"),
        img.manifest.layers.len(),
    )
}

fn diff_ids(config: &Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|d| d.as_str().expect("diff id").to_string())
        .collect()
}

fn history(config: &Value) -> Vec<(String, bool)> {
    config["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap_or("").to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// Every history entry that is not an empty layer stands for one layer, in order.
fn assert_history_matches_layers(config: &Value, layers: usize) {
    let with_layer = history(config).iter().filter(|(_, empty)| !empty).count();
    assert_eq!(with_layer, layers, "history: {:?}", history(config));
    assert_eq!(diff_ids(config).len(), layers);
}

#[test]
fn run_steps_that_change_nothing_add_no_layers() {
    let cache = shared_store();
    let (base, base_layers) = image(&cache, "debian:bookworm");
    build(
        &cache,
        "kiln-test/layers-noop",
        "FROM debian:bookworm\nRUN true\nRUN true\nRUN true\n",
        &[],
        &["--no-cache"],
    );
    let (config, layers) = image(&cache, "kiln-test/layers-noop");
    assert_eq!(layers, base_layers, "a RUN without changes added a layer");
    assert_eq!(diff_ids(&config), diff_ids(&base));
    let h = history(&config);
    let runs = &h[h.len() - 3..];
    for (created_by, empty) in runs {
        assert!(created_by.contains("true"), "{created_by}");
        assert!(*empty, "{created_by} is not marked as an empty layer");
    }
    assert_history_matches_layers(&config, layers);
}

#[test]
fn steps_with_byte_identical_layers_still_build() {
    let cache = shared_store();
    let (_, base_layers) = image(&cache, "debian:bookworm");
    // Steps 1 and 3 write the same file with the same time: the same layer, twice in the
    // stage's stack of layers, which the later steps mount.
    let out = build(
        &cache,
        "kiln-test/layers-identical",
        "FROM debian:bookworm\nRUN touch -d @0 /x\nRUN rm /x\nRUN touch -d @0 /x\nRUN true\n\
         COPY f /f\nRUN test -f /x && cp /f /g\n",
        &[("f", "copied\n")],
        &["--no-cache"],
    );
    let (config, layers) = image(&cache, "kiln-test/layers-identical");
    let ids = diff_ids(&config);
    assert_eq!(
        layers,
        base_layers + 5,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        ids[base_layers],
        ids[base_layers + 2],
        "the two layers differ"
    );
    assert_ne!(ids[base_layers], ids[base_layers + 1]);
    assert_history_matches_layers(&config, layers);
}

#[test]
fn proxy_build_args_reach_run_but_not_the_image_or_the_cache_key() {
    let cache = shared_store();
    let dockerfile = "FROM debian:bookworm\n\
        RUN test \"$HTTP_PROXY\" = \"$http_proxy\" && test \"$no_proxy\" = localhost \
        && echo \"$HTTP_PROXY\" | grep -q :3128 && touch /proxied\n";
    let first = build(
        &cache,
        "kiln-test/layers-proxy",
        dockerfile,
        &[],
        &[
            "--no-cache",
            "--build-arg",
            "http_proxy=http://user:secret-one@proxy.invalid:3128",
            "--build-arg",
            "NO_PROXY=localhost",
        ],
    );
    let (config, _) = image(&cache, "kiln-test/layers-proxy");
    let text = config.to_string();
    assert!(
        !text.contains("secret-one"),
        "the proxy is in the image: {text}"
    );
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("(1 steps run, 0 cached)"),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // Another proxy is not another step: the cached step is used, as in BuildKit.
    let second = build(
        &cache,
        "kiln-test/layers-proxy",
        dockerfile,
        &[],
        &[
            "--build-arg",
            "http_proxy=http://user:secret-two@proxy.invalid:3128",
            "--build-arg",
            "NO_PROXY=localhost",
        ],
    );
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("(0 steps run, 1 cached)"), "{err}");
}

#[test]
fn onbuild_triggers_of_a_base_image_run_first_and_are_cleared() {
    let cache = shared_store();
    build(
        &cache,
        "kiln-test/onbuild-parent",
        "FROM debian:bookworm\nONBUILD RUN echo one >> /order\nONBUILD ENV TRIGGERED=yes\n\
         ONBUILD COPY f /f\nRUN echo zero > /order\n",
        &[],
        &[],
    );
    let (parent, _) = image(&cache, "kiln-test/onbuild-parent");
    assert_eq!(
        parent["config"]["OnBuild"],
        serde_json::json!(["RUN echo one >> /order", "ENV TRIGGERED=yes", "COPY f /f"])
    );
    // The child's own RUN sees what the triggers did, in their order; a failed check fails
    // the build.
    build(
        &cache,
        "kiln-test/onbuild-child",
        "FROM kiln-test/onbuild-parent\n\
         RUN echo two >> /order && test \"$(cat /order)\" = \"$(printf 'zero\\none\\ntwo')\" \
         && test \"$TRIGGERED\" = yes && test \"$(cat /f)\" = from-context\n",
        &[("f", "from-context\n")],
        &["--no-cache"],
    );
    let (child, _) = image(&cache, "kiln-test/onbuild-child");
    assert!(
        child["config"].get("OnBuild").is_none_or(Value::is_null),
        "triggers passed on: {}",
        child["config"]
    );
    let env = child["config"]["Env"].to_string();
    assert!(env.contains("TRIGGERED=yes"), "{env}");
    // A grandchild runs no triggers: the child has none.
    build(
        &cache,
        "kiln-test/onbuild-grandchild",
        "FROM kiln-test/onbuild-child\n\
         RUN test \"$(cat /order)\" = \"$(printf 'zero\\none\\ntwo')\"\n",
        &[],
        &["--no-cache"],
    );
}
