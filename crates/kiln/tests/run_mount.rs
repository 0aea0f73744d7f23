//! `RUN --mount`, built for real on the Debian base: bind mounts of the context and of a stage,
//! cache mounts that persist across builds, tmpfs mounts and secrets. Every layer of each image
//! is read back to show that nothing mounted entered it; a secret's value is looked for in the
//! layers, the image history and every file of the store; and the step cache's answers are
//! read from `--progress json` to show which steps rerun when only a secret, a cache mount's
//! content or an unused build argument changes. A C build with its object files in a cache
//! mount shows the warm cache at work (its times go to BENCHMARKS.md).

mod common;

use common::{kiln, shared_store};
use kiln_oci::{Reference, Store};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

/// A name unique to this test run, for cache ids and tags.
fn unique(what: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{what}-{}-{t}", std::process::id())
}

/// What one build did: the image digest, and for each step that changes the file system its
/// line and whether it came from the step cache.
struct Outcome {
    cached: BTreeMap<u64, bool>,
    stderr: String,
}

/// `kiln --progress json image build -t TAG --cache STORE EXTRA... CONTEXT`; panics with the
/// output when it fails.
fn build(cache: &Path, ctx: &Path, tag: &str, extra: &[&str]) -> Outcome {
    let out = try_build(cache, ctx, tag, extra);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build of {tag} failed:\n{stderr}");
    let mut cached = BTreeMap::new();
    for line in stderr.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["event"] == "step_finished"
            && let (Some(l), Some(c)) = (v["line"].as_u64(), v["cached"].as_bool())
            && v["instruction"]
                .as_str()
                .is_some_and(|i| i.starts_with("RUN"))
        {
            cached.insert(l, c);
        }
    }
    Outcome { cached, stderr }
}

fn try_build(cache: &Path, ctx: &Path, tag: &str, extra: &[&str]) -> std::process::Output {
    kiln()
        .args(["--progress", "json", "image", "build", "-t", tag, "--cache"])
        .arg(cache)
        .args(extra)
        .arg(ctx)
        .output()
        .expect("spawn kiln")
}

/// Every layer of image `tag`: path -> content (empty for what is not a regular file).
fn layers(cache: &Path, tag: &str) -> Vec<BTreeMap<String, Vec<u8>>> {
    let store = Store::open(cache).expect("store");
    let r: Reference = tag.parse().expect("ref");
    let img = store
        .resolve(&r, kiln_oci::spec::normalize_arch(""))
        .expect("built image");
    let mut out = Vec::new();
    for layer in &img.manifest.layers {
        let mut entries = BTreeMap::new();
        let mut ar = tar::Archive::new(store.open_layer(layer).expect("layer"));
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let path = String::from_utf8_lossy(&e.path_bytes())
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            let mut data = Vec::new();
            if e.header().entry_type().is_file() {
                e.read_to_end(&mut data).expect("read");
            }
            entries.insert(path, data);
        }
        out.push(entries);
    }
    out
}

/// The content of `path` (no leading slash) in the image: from the topmost layer holding it.
fn file(layers: &[BTreeMap<String, Vec<u8>>], path: &str) -> String {
    let data = layers
        .iter()
        .rev()
        .find_map(|l| l.get(path))
        .unwrap_or_else(|| panic!("{path} is in no layer"));
    String::from_utf8_lossy(data).trim().to_string()
}

/// Assert that no layer holds `path` or anything beneath it.
fn absent(layers: &[BTreeMap<String, Vec<u8>>], path: &str) {
    for (i, l) in layers.iter().enumerate() {
        let prefix = format!("{path}/");
        let found: Vec<&String> = l
            .keys()
            .filter(|k| *k == path || k.starts_with(&prefix))
            .collect();
        assert!(found.is_empty(), "layer {i} holds {found:?}");
    }
}

/// The image config of `tag`.
fn config(cache: &Path, tag: &str) -> Value {
    let store = Store::open(cache).expect("store");
    let r: Reference = tag.parse().expect("ref");
    let img = store
        .resolve(&r, kiln_oci::spec::normalize_arch(""))
        .expect("built image");
    let d: kiln_oci::Digest = img.manifest.config.digest.parse().expect("digest");
    serde_json::from_slice(&store.read_json_blob(&d, "config").expect("config")).expect("json")
}

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

#[test]
fn bind_mounts_from_the_context_and_a_stage() {
    let cache = shared_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path();
    write(ctx, "src/input.txt", "from the context\n");
    write(ctx, "src/ignored.log", "left out by .dockerignore\n");
    write(ctx, "single", "one file\n");
    write(ctx, ".dockerignore", "*.log\nsrc/*.log\n");
    write(
        ctx,
        "Dockerfile",
        &("FROM debian:bookworm AS tools\n\
         RUN mkdir -p /opt/tool && echo from the stage > /opt/tool/data\n\
         FROM debian:bookworm\n"
            .to_string()
            + &format!("RUN echo {} > /nonce\n", unique("run"))
            + "RUN --mount=type=bind,source=src,target=/mnt/ctx cat /mnt/ctx/input.txt > /from-ctx \
             && ! test -e /mnt/ctx/ignored.log && ! touch /mnt/ctx/new 2>/dev/null\n\
         RUN --mount=from=tools,source=/opt/tool,target=/deep/er/tool,rw \
             cat /deep/er/tool/data > /from-stage && echo scribble > /deep/er/tool/data\n\
         RUN --mount=type=bind,source=single,target=/etc/single cp /etc/single /from-file\n\
         RUN --mount=from=tools,source=/opt/tool,target=/again cat /again/data > /after-rw\n"),
    );
    let tag = format!("kiln-test/{}", unique("bind"));
    let first = build(&cache, ctx, &tag, &[]);
    let l = layers(&cache, &tag);
    assert_eq!(file(&l, "from-ctx"), "from the context");
    assert_eq!(file(&l, "from-stage"), "from the stage");
    assert_eq!(file(&l, "from-file"), "one file");
    // The rw bind's write was thrown away: the stage is as it was.
    assert_eq!(file(&l, "after-rw"), "from the stage");
    absent(&l, "mnt/ctx");
    absent(&l, "deep");
    absent(&l, "etc/single");
    absent(&l, "again");
    assert!(first.cached.values().any(|c| !c), "{}", first.stderr);
    // Unchanged: every step cached. A changed bound file reruns the step that binds it
    // (and those after it); an ignored file changes nothing.
    let again = build(&cache, ctx, &tag, &[]);
    assert!(again.cached.values().all(|c| *c), "{}", again.stderr);
    write(ctx, "src/ignored.log", "changed, but ignored\n");
    let ignored = build(&cache, ctx, &tag, &[]);
    assert!(ignored.cached.values().all(|c| *c), "{}", ignored.stderr);
    write(ctx, "single", "another file\n");
    let changed = build(&cache, ctx, &tag, &[]);
    assert_eq!(
        changed
            .cached
            .iter()
            .map(|(l, c)| (*l, *c))
            .collect::<Vec<_>>(),
        [
            (2, true),
            (4, true),
            (5, true),
            (6, true),
            (7, false),
            (8, false)
        ],
        "{}",
        changed.stderr
    );
    assert_eq!(file(&layers(&cache, &tag), "from-file"), "another file");
}

#[test]
fn cache_mounts_persist_across_builds_outside_the_layers() {
    let cache = shared_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path();
    let id = unique("counter");
    // The same cache id in two different steps of two builds: the second sees the first's
    // files. A relative target is under WORKDIR; mode and owner apply to a new directory.
    let dockerfile = |n: u32| {
        format!(
            "FROM debian:bookworm\n\
             WORKDIR /work\n\
             RUN --mount=type=cache,id={id},target=counter,sharing=locked \
                 echo build {n} >> counter/log && wc -l < counter/log > /count-{n} \
                 && echo {n} > /work/counter/only-in-cache\n\
             RUN --mount=type=cache,id={id}-owned,target=/var/cache/owned,uid=1000,gid=1000,mode=0750 \
                 stat -c '%u %g %a' /var/cache/owned > /owned\n\
             RUN --mount=type=cache,id={id},target=/peek,ro ls /peek > /peek-{n} \
                 && ! touch /peek/x 2>/dev/null\n"
        )
    };
    write(ctx, "Dockerfile", &dockerfile(1));
    let tag = format!("kiln-test/{}", unique("cache"));
    build(&cache, ctx, &tag, &[]);
    let l = layers(&cache, &tag);
    assert_eq!(file(&l, "count-1"), "1");
    assert_eq!(file(&l, "owned"), "1000 1000 750");
    assert_eq!(file(&l, "peek-1"), "log\nonly-in-cache");
    absent(&l, "work/counter");
    absent(&l, "var/cache/owned");
    absent(&l, "peek");
    write(ctx, "Dockerfile", &dockerfile(2));
    build(&cache, ctx, &tag, &[]);
    let l = layers(&cache, &tag);
    assert_eq!(file(&l, "count-2"), "2", "the cache did not persist");
    // The cache lives in the store's build cache, which `cache clean --build-cache` drops.
    let mounts = cache.join("build").join("mounts");
    let found = walk(&mounts)
        .into_iter()
        .filter(|p| p.ends_with("only-in-cache"))
        .count();
    assert!(found >= 1, "no cache directory under {}", mounts.display());
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn tmpfs_mounts_are_empty_sized_and_gone() {
    let cache = shared_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path();
    write(
        ctx,
        "Dockerfile",
        "FROM debian:bookworm\n\
         RUN --mount=type=tmpfs,target=/not/there/yet,size=2m \
             df -k /not/there/yet | awk 'NR==2 {print $2}' > /tmpfs-size \
             && stat -f -c %T /not/there/yet > /tmpfs-type \
             && dd if=/dev/zero of=/not/there/yet/big bs=1k count=1024 2>/dev/null \
             && ls /not/there/yet > /tmpfs-list\n\
         RUN --mount=type=tmpfs,target=/made/for/mount echo work > /made/kept\n",
    );
    let tag = format!("kiln-test/{}", unique("tmpfs"));
    build(&cache, ctx, &tag, &[]);
    let l = layers(&cache, &tag);
    assert_eq!(file(&l, "tmpfs-size"), "2048");
    assert_eq!(file(&l, "tmpfs-type"), "tmpfs");
    assert_eq!(file(&l, "tmpfs-list"), "big");
    // Neither the mount point nor the directories made for it are left...
    absent(&l, "not");
    // ...unless the step put files in them: those stay, as in BuildKit.
    assert_eq!(file(&l, "made/kept"), "work");
    absent(&l, "made/for");
}

#[test]
fn secrets_appear_in_no_layer_history_or_store_file() {
    let cache = shared_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("ctx");
    let value = unique("kiln-secret-value");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, &value).expect("secret");
    let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(value.as_bytes()));
    // A first step of this run's own, so that the secret steps are not step cache hits of an
    // earlier run (whose secret had another value).
    write(
        &ctx,
        "Dockerfile",
        &("FROM debian:bookworm\n".to_string()
            + &format!("RUN echo {} > /nonce\n", unique("run"))
            + "RUN --mount=type=secret,id=token sha256sum < /run/secrets/token | cut -d' ' -f1 > /file-hash \
             && stat -c '%a %u %g' /run/secrets/token > /file-mode\n\
         RUN --mount=type=secret,id=token,env=TOKEN,target=/etc/app/token,uid=1000,mode=0440,required \
             printf %s \"$TOKEN\" | sha256sum | cut -d' ' -f1 > /env-hash \
             && stat -c '%a %u' /etc/app/token > /target-mode\n\
         RUN --mount=type=secret,id=absent cat /run/secrets/absent 2>/dev/null || echo none > /optional\n"),
    );
    let tag = format!("kiln-test/{}", unique("secret"));
    let src = format!("id=token,src={}", secret.display());
    // The value also comes through kiln's environment for the second form.
    let out = kiln()
        .args([
            "--progress",
            "json",
            "image",
            "build",
            "-t",
            &tag,
            "--cache",
        ])
        .arg(&cache)
        .args(["--secret", &src])
        .arg(&ctx)
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = layers(&cache, &tag);
    assert_eq!(file(&l, "file-hash"), expected);
    assert_eq!(file(&l, "file-mode"), "400 0 0");
    assert_eq!(file(&l, "env-hash"), expected);
    assert_eq!(file(&l, "target-mode"), "440 1000");
    assert_eq!(file(&l, "optional"), "none");
    absent(&l, "run/secrets");
    absent(&l, "etc/app");
    for (i, layer) in l.iter().enumerate() {
        for (path, data) in layer {
            assert!(
                !data.windows(value.len()).any(|w| w == value.as_bytes()),
                "layer {i}: {path} holds the secret"
            );
        }
    }
    let history = config(&cache, &tag)["history"].to_string();
    assert!(history.contains("/run/secrets/token"), "{history}");
    assert!(!history.contains(&value), "the history holds the secret");
    // No file of the build cache holds it: step cache entries, RUN logs, cache mounts, scratch.
    // (Its unpacked layers, build/layers, are the layers checked above; the store's blobs are
    // those layers compressed, the configs and manifests, whose history is checked above.)
    let grep = std::process::Command::new("grep")
        .args(["-r", "-l", "-F", "--exclude-dir=layers", "--", &value])
        .arg(cache.join("build"))
        .arg(cache.join("index.json"))
        .output()
        .expect("grep");
    assert_eq!(
        grep.status.code(),
        Some(1),
        "files holding the secret: {}",
        String::from_utf8_lossy(&grep.stdout)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&value));
    // A required secret that is not given is an error naming it; ssh is refused.
    write(
        &ctx,
        "Dockerfile",
        "FROM debian:bookworm\nRUN --mount=type=secret,id=token,required true\n",
    );
    let missing = try_build(&cache, &ctx, &tag, &["--no-cache"]);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(
        err.contains("the secret \\\"token\\\" is required but was not given")
            || err.contains("the secret \"token\" is required but was not given"),
        "{err}"
    );
    write(
        &ctx,
        "Dockerfile",
        "FROM debian:bookworm\nRUN --mount=type=ssh true\n",
    );
    let ssh = try_build(&cache, &ctx, &tag, &[]);
    let err = String::from_utf8_lossy(&ssh.stderr);
    assert!(!ssh.status.success());
    assert!(err.contains("kiln forwards no SSH agent"), "{err}");
}

#[test]
fn step_cache_follows_buildkit_under_mounts() {
    let cache = shared_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("ctx");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "first value").expect("secret");
    let id = unique("keyed");
    write(&ctx, "input", "one\n");
    write(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM debian:bookworm\n\
             RUN echo {nonce} > /nonce\n\
             RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /secret-size\n\
             RUN --mount=type=cache,target=/c,id={id} date +%s%N >> /c/stamps && wc -l < /c/stamps > /stamps\n\
             ARG USED\n\
             RUN echo \"$USED\" > /used\n\
             RUN --mount=type=bind,target=/ctx cat /ctx/input > /input\n",
            nonce = unique("run")
        ),
    );
    let tag = format!("kiln-test/{}", unique("keys"));
    let src = format!("id=tok,src={}", secret.display());
    let steps = |o: &Outcome| o.cached.iter().map(|(l, c)| (*l, *c)).collect::<Vec<_>>();
    let first = build(&cache, &ctx, &tag, &["--secret", &src]);
    assert_eq!(
        steps(&first),
        [(2, false), (3, false), (4, false), (6, false), (7, false)],
        "{}",
        first.stderr
    );
    // Only the secret's value changes (and the cache mount's content changed in the first
    // build), and a build argument no step declares is given: nothing reruns.
    std::fs::write(&secret, "a different and longer value").expect("secret");
    let second = build(
        &cache,
        &ctx,
        &tag,
        &["--secret", &src, "--build-arg", "NOBODY_USES=1"],
    );
    assert_eq!(
        steps(&second),
        [(2, true), (3, true), (4, true), (6, true), (7, true)],
        "{}",
        second.stderr
    );
    assert_eq!(file(&layers(&cache, &tag), "secret-size"), "11");
    // The cache mount's content changes behind the build's back: still nothing reruns.
    let store_mounts = cache.join("build").join("mounts");
    for p in walk(&store_mounts) {
        if p.ends_with("stamps")
            && std::fs::read_to_string(&p).is_ok_and(|s| s.lines().count() == 1)
        {
            std::fs::write(&p, "changed\nby hand\n").expect("write");
        }
    }
    let third = build(&cache, &ctx, &tag, &["--secret", &src]);
    assert!(third.cached.values().all(|c| *c), "{}", third.stderr);
    // A build argument the stage declares reruns the steps after its ARG only.
    let fourth = build(
        &cache,
        &ctx,
        &tag,
        &["--secret", &src, "--build-arg", "USED=x"],
    );
    assert_eq!(
        steps(&fourth),
        [(2, true), (3, true), (4, true), (6, false), (7, false)],
        "{}",
        fourth.stderr
    );
    // The bound file's content is part of the key.
    write(&ctx, "input", "two\n");
    let fifth = build(
        &cache,
        &ctx,
        &tag,
        &["--secret", &src, "--build-arg", "USED=x"],
    );
    assert_eq!(
        steps(&fifth),
        [(2, true), (3, true), (4, true), (6, true), (7, false)],
        "{}",
        fifth.stderr
    );
    assert_eq!(file(&layers(&cache, &tag), "input"), "two");
}

/// 48 C files of generated functions, a Makefile that keeps its objects in $(OBJ) and records
/// each file it compiles.
fn c_project(ctx: &Path) {
    let mut names = Vec::new();
    for i in 0..48 {
        let mut c = String::from("#include <stdint.h>\n");
        for f in 0..60 {
            c.push_str(&format!(
                "uint64_t f{i}_{f}(uint64_t x) {{\n  uint64_t a = x * {m};\n  for (int k = 0; k < {f} + 3; k++) {{\n    a ^= (a << 7) + (a >> 3) + {f}u;\n    a = a * 2654435761u + k;\n  }}\n  return a;\n}}\n",
                m = i * 7 + f + 1
            ));
        }
        c.push_str(&format!(
            "uint64_t unit{i}(uint64_t x) {{ return f{i}_0(x) + f{i}_59(x); }}\n"
        ));
        write(ctx, &format!("src/unit{i}.c"), &c);
        names.push(format!("unit{i}"));
    }
    let mut main = String::from("#include <stdint.h>\n#include <stdio.h>\n");
    for n in &names {
        main.push_str(&format!("uint64_t {n}(uint64_t);\n"));
    }
    main.push_str("int main(void) { uint64_t s = 0;\n");
    for n in &names {
        main.push_str(&format!("  s += {n}(1);\n"));
    }
    main.push_str("  printf(\"%llu\\n\", (unsigned long long)s); return 0; }\n");
    write(ctx, "src/main.c", &main);
    write(
        ctx,
        "Makefile",
        "SRCS := $(wildcard src/*.c)\n\
         OBJS := $(patsubst src/%.c,$(OBJ)/%.o,$(SRCS))\n\
         $(BIN): $(OBJS)\n\
         \tgcc -o $@ $(OBJS)\n\
         $(OBJ)/%.o: src/%.c\n\
         \t@mkdir -p $(OBJ)\n\
         \t@echo $< >> $(LOG)\n\
         \tgcc -O2 -c -o $@ $<\n",
    );
}

#[test]
fn c_build_reuses_objects_from_a_warm_cache_mount() {
    let cache = shared_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path();
    c_project(ctx);
    let id = unique("c-objects");
    // The toolchain step is the one of examples/hello-c (cached in a shared store).
    write(
        ctx,
        "Dockerfile",
        &format!(
            "FROM debian:bookworm\n\
             RUN apt-get update \\\n \
             && apt-get install -y --no-install-recommends build-essential \\\n \
             && rm -rf /var/lib/apt/lists/*\n\
             RUN --mount=type=bind,target=/src --mount=type=cache,target=/build,id={id} \
                 mkdir -p /out && rm -f /out/compiled \
                 && make -C /src -j2 OBJ=/build/obj BIN=/out/prog LOG=/out/compiled \
                 && /out/prog > /out/result\n"
        ),
    );
    let tag = format!("kiln-test/{}", unique("cbuild"));
    // The toolchain first, so that the timed builds time the compilation.
    let toolchain = dir.path().join("toolchain");
    write(
        &toolchain,
        "Dockerfile",
        "FROM debian:bookworm\n\
         RUN apt-get update \\\n \
         && apt-get install -y --no-install-recommends build-essential \\\n \
         && rm -rf /var/lib/apt/lists/*\n",
    );
    build(&cache, &toolchain, &format!("{tag}-toolchain"), &[]);
    let started = Instant::now();
    let cold = build(&cache, ctx, &tag, &[]);
    let cold_time = started.elapsed();
    assert_eq!(cold.cached.get(&5), Some(&false), "{}", cold.stderr);
    let l = layers(&cache, &tag);
    assert_eq!(file(&l, "out/compiled").lines().count(), 49);
    let result = file(&l, "out/result");
    absent(&l, "build");
    absent(&l, "src");
    // One file changes: the step reruns, and compiles that file only.
    let main = ctx.join("src/main.c");
    let text = std::fs::read_to_string(&main).expect("main");
    std::fs::write(&main, text.replace("uint64_t s = 0;", "uint64_t s = 1;")).expect("write");
    let started = Instant::now();
    let warm = build(&cache, ctx, &tag, &[]);
    let warm_time = started.elapsed();
    assert_eq!(warm.cached.get(&5), Some(&false), "{}", warm.stderr);
    let l = layers(&cache, &tag);
    assert_eq!(file(&l, "out/compiled"), "src/main.c");
    let sum: u128 = result.parse().expect("number");
    assert_eq!(
        file(&l, "out/result"),
        ((sum + 1) % (1u128 << 64)).to_string()
    );
    println!(
        "C build, 49 files: cold cache mount {:.2}s, warm cache mount after a one-file change {:.2}s ({:.1}x)",
        cold_time.as_secs_f64(),
        warm_time.as_secs_f64(),
        cold_time.as_secs_f64() / warm_time.as_secs_f64()
    );
}

#[test]
fn mounts_inside_mounts() {
    let cache = shared_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path();
    write(ctx, "f", "context file\n");
    let id = unique("nested");
    // A cache directory inside a writable bind of the context: its mount point is made in
    // the step's copy of the context, never in the context itself.
    write(
        ctx,
        "Dockerfile",
        &format!(
            "FROM debian:bookworm\n\
             RUN --mount=type=bind,target=/src,rw --mount=type=cache,target=/src/build,id={id} \
                 cat /src/f > /copied && touch /src/build/object\n"
        ),
    );
    let tag = format!("kiln-test/{}", unique("nested"));
    build(&cache, ctx, &tag, &[]);
    let l = layers(&cache, &tag);
    assert_eq!(file(&l, "copied"), "context file");
    absent(&l, "src");
    assert!(!ctx.join("build").exists(), "the context was written to");
    // Inside a read-only bind the path must exist: the error says so.
    write(
        ctx,
        "Dockerfile",
        &format!(
            "FROM debian:bookworm\n\
             RUN --mount=type=bind,target=/src --mount=type=cache,target=/src/build,id={id} true\n"
        ),
    );
    let out = try_build(&cache, ctx, &tag, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "target=/src/build lies inside the read-only mount at /src, whose source has no build"
        ),
        "{err}"
    );
    assert!(!ctx.join("build").exists(), "the context was written to");
}
