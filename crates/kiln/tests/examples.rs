//! examples/hello.yml boots, greets from an onboot container and powers off; user data given
//! to `kiln run qemu --data` reaches the guest's containers through pkg/metadata.

mod common;

use common::*;

#[test]
fn hello_example_greets_and_powers_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let system = build_example(dir.path(), "hello");
    let console = boot_ok(&system, &["--networking", "none"]);
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
        kernel = pkg_ref("kernel"),
        init = pkg_ref("init"),
        metadata = pkg_ref("metadata"),
        busybox = pkg_ref("busybox"),
        poweroff = pkg_ref("poweroff"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let system = build_manifest(&cache, &manifest, dir.path(), "data");
    let console = boot_ok(
        &system,
        &["--networking", "none", "--data", "kiln user data 42"],
    );
    assert!(
        console.contains("show: got: kiln user data 42"),
        "{console}"
    );
}
