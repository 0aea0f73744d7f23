//! examples/hello.yml boots, greets from an onboot container and powers off; user data given
//! to `kiln run qemu --data` reaches the guest's containers through pkg/metadata.

mod common;

use common::*;

#[test]
fn hello_example_greets_and_powers_off() {
    let cache = shared_store();
    build_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let system = build_system(
        &cache,
        &repo_root().join("examples/hello.yml"),
        dir.path(),
        "hello",
    );
    let (status, console) = run_system(&system, &["--networking", "none"]);
    assert!(status.success(), "exit {status:?}:\n{console}");
    assert!(
        console.contains("hello: Hello from kiln, running Linux"),
        "{console}"
    );
    assert!(console.contains("poweroff: powering off"), "{console}");
}

#[test]
fn user_data_reaches_the_guest() {
    let cache = shared_store();
    build_init();
    let pkg = repo_root().join("pkg");
    let p = |name: &str| format!("\"@pkg:{}\"", pkg.join(name).display());
    let manifest = format!(
        r#"kernel:
  image: {kernel}
  cmdline: "console=ttyS0 quiet"
init:
  - {init}
onboot:
  - name: metadata
    image: {metadata}
  - name: show
    image: {busybox}
    binds:
      - /run/config:/run/config
    command: ["/bin/sh", "-c", "echo got: $(cat /run/config/userdata)"]
  - name: poweroff
    image: {poweroff}
"#,
        kernel = p("kernel"),
        init = p("init"),
        metadata = p("metadata"),
        busybox = p("busybox"),
        poweroff = p("poweroff"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data.yml");
    std::fs::write(&path, manifest).expect("manifest");
    let system = build_system(&cache, &path, dir.path(), "data");
    let (status, console) = run_system(
        &system,
        &["--networking", "none", "--data", "kiln user data 42"],
    );
    assert!(status.success(), "exit {status:?}:\n{console}");
    assert!(
        console.contains("show: got: kiln user data 42"),
        "{console}"
    );
}
