//! Every `linuxkit` command line of the kinds kiln takes over (build, run qemu and run without
//! a backend, pkg build|push|show-tag, cache, metadata create, serve, version and the global
//! flags), as LinuxKit's own repository writes them: its README, docs/, examples/, test/,
//! pkg/, tools/, kernel/ and projects/ Makefiles and scripts (LinuxKit 1.8.2, March 2026). Each
//! line is `SOURCE<TAB>COMMAND`, the source being the file and line in LinuxKit's repository.
//! kiln's parser must accept each, under the name `linuxkit` (a link to kiln) and with
//! `linuxkit` replaced by `kiln`. Shell and make variables stand for the sample values in
//! [`sample`]. What kiln then does with a format or flag it cannot serve yet (say `--format
//! iso-bios`) is a clear error at run time, not a parse error.
//!
//! Left out, with why: lines of prose, and lines LinuxKit itself refuses:
//! - `linuxkit build` (docs/platform-azure.md:5): no manifest: prose
//! - `linuxkit build --docker` (docs/packages.md:97): no manifest: prose (LinuxKit refuses it too)
//! - `linuxkit build -format vmdk` (docs/platform-vmware.md:24): prose (no manifest)
//! - `linuxkit build -help` (README.md:67): LinuxKit itself refuses it (pflag reads -h then e, l, p)
//! - `linuxkit build -o iso-bios` (docs/platform-vmware.md:33): a doc error: LinuxKit has no -o and this means --format
//! - `linuxkit build -v --no-sbom --format tar --input-tar "${NAME}-1.tar" --o "${NAME}-1.tar" ./test.yml` (test/cases/000_build/060_input_tar/010_same_filename/test.sh:29): LinuxKit refuses it: -v takes --no-sbom as its number (the test expects the failure)
//! - `linuxkit build ...` (docs/platform-gcp.md:53): prose
//! - `linuxkit pkg` (docs/packages.md:304): the command group alone: prose
//! - `linuxkit pkg build` (docs/packages.md:18): no package: prose
//! - `linuxkit pkg push` (docs/alpine-base-update.md:221): no package: prose
//! - `linuxkit pkg show-tag` (docs/packages.md:276): no package: prose
//! - `linuxkit pkg show-tag on the directory ./pkg/xen-tools, and then` (scripts/update-component-sha.sh:40): prose
//! - `linuxkit run` (docs/external-disk.md:2): no prefix: prose
//! - `linuxkit run -ip` (docs/platform-hyperkit.md:64): prose (a flag of an old backend)
//! - `linuxkit run -networking vpnkit -publish 2222:22/tcp vpnkit-forwarder` (docs/platform-hyperkit.md:158): vpnkit networking belongs to the hyperkit backend
//! - `linuxkit run qemu` (docs/platform-qemu.md:19): no prefix: prose
//! - `linuxkit run qemu -containerized "${NAME}"` (test/cases/010_platforms/000_qemu/100_container/test.sh:33): a flag LinuxKit removed (qemu in a container)
//! - `linuxkit run qemu -networking` (docs/platform-qemu.md:72): prose (no value)
//! - `linuxkit run virtualization.framework` (docs/platform-virtualization-framework.md:193): prose (the macOS backend)
//! - `linuxkit pkg build --platforms <platform1,platform2,...platformN>` (docs/packages.md:137): a fragment without the package directory or prefix LinuxKit needs too
//! - `linuxkit pkg build --platforms=linux/arm64 --builders linux/arm64=my-remote-arm64` (docs/packages.md:264): a fragment without the package directory or prefix LinuxKit needs too
//! - `linuxkit pkg build --platforms=linux/arm64,linux/amd64` (docs/packages.md:236): a fragment without the package directory or prefix LinuxKit needs too
//! - `linuxkit pkg build --platforms=linux/arm64,linux/amd64 --builders linux/amd64=my-remote-builder-amd64` (docs/packages.md:249): a fragment without the package directory or prefix LinuxKit needs too
//! - `linuxkit pkg build --platforms=linux/arm64,linux/amd64 --builders linux/arm64=my-remote-arm64` (docs/packages.md:218): a fragment without the package directory or prefix LinuxKit needs too
//! - `linuxkit run qemu -publish 8080:80` (docs/platform-qemu.md:65): a fragment without the package directory or prefix LinuxKit needs too

use crate::{Cli, compat};
use clap::CommandFactory as _;

const LINES: &str = r#"test/Makefile:37	linuxkit build --format gcp -pull hack/test-ltp.yml
projects/clear-containers/tools/Makefile:29	linuxkit build $(MKFILE_DIR)/../clear-containers.yml
projects/ima-namespace/Makefile:6	linuxkit build -format kernel+initrd ima-namespace
projects/miragesdk/README.md:66	linuxkit build examples/mirage-dhcp.yml
projects/ima-namespace/Makefile:3	linuxkit run ima-namespace
projects/miragesdk/README.md:67	linuxkit run mirage-dhcp
projects/clear-containers/README.md:70	linuxkit build ./projects/clear-containers/clear-containers.yml
.github/workflows/ci.yml:115	linuxkit version
test/cases/040_packages/025_auth/test.sh:119	linuxkit --cache "${CACHEDIR}" pkg build --platforms "${PLATFORM}" --builder-config "$(pwd)/buildkitd.toml" --force --registry-creds "${REGISTRY_IP}:${REGISTRY_PORT}=${REGISTRY_USER}:${REGISTRY_PASS}" .
test/cases/040_packages/025_auth/test.sh:112	linuxkit --cache "${CACHEDIR}" pkg build --platforms "${PLATFORM}" --builder-config "$(pwd)/buildkitd.toml" --force .
test/cases/000_build/056_build_args/005_build_arg_special_yaml/test.sh:54	linuxkit --cache ${CACHE_DIR} cache export --format filesystem --outfile - "${current}"
test/cases/000_build/056_build_args/010_build_arg_special_multiple_yaml/test.sh:74	linuxkit --cache ${CACHE_DIR} cache export --platform linux/${targetarch} --format filesystem --outfile /tmp/lktout123.tar "${current}"
test/cases/000_build/056_build_args/006_build_arg_special_cli/test.sh:42	linuxkit --cache ${CACHE_DIR} pkg build --force --build-arg-file build-args .
test/cases/000_build/056_build_args/005_build_arg_special_yaml/test.sh:42	linuxkit --cache ${CACHE_DIR} pkg build --force .
test/cases/000_build/056_build_args/010_build_arg_special_multiple_yaml/test.sh:53	linuxkit --cache ${CACHE_DIR} pkg build --platforms linux/${targetarch} --force --build-yml "${yml}" . ${extra_args}
test/cases/000_build/056_build_args/005_build_arg_special_yaml/test.sh:39	linuxkit --cache ${CACHE_DIR} pkg show-tag "${TMPDIR1}"
test/cases/000_build/056_build_args/005_build_arg_special_yaml/test.sh:40	linuxkit --cache ${CACHE_DIR} pkg show-tag "${TMPDIR2}"
test/cases/000_build/080_mirrors/test.sh:28	linuxkit --mirror http://localhost:5001 --cache ${CACHEDIR} build --format kernel+initrd --name "${NAME}" ./test.yml
test/cases/040_packages/026_buildkit_config/test.sh:49	linuxkit --verbose 3 --cache "${CACHEDIR}" pkg build --platforms "${PLATFORM}" --builder-config "$(pwd)/buildkitd-2.toml" --force .
test/cases/040_packages/026_buildkit_config/test.sh:31	linuxkit --verbose 3 --cache "${CACHEDIR}" pkg build --platforms "${PLATFORM}" --builder-config "$(pwd)/buildkitd.toml" --force .
test/cases/000_build/100_examples/000_minimal/test.sh:20	linuxkit build "${LINUXKIT_EXAMPLES_DIR}/${NAME}.yml"
docs/yaml.md:470	linuxkit build -
test/cases/020_kernel/111_kmod_5.4.x/test.sh:27	linuxkit build --docker --format kernel+initrd --name "${NAME}" test.yml
test/cases/000_build/000_formats/004_aws/test.sh:19	linuxkit build --format aws --name "${NAME}" ../test.yml
test/cases/010_platforms/000_qemu/050_run_aws/test.sh:18	linuxkit build --format aws --name "${NAME}" test.yml
test/cases/000_build/000_formats/003_gcp/test.sh:19	linuxkit build --format gcp --name "${NAME}" ../test.yml
test/cases/010_platforms/110_gcp/000_run/test.sh:32	linuxkit build --format gcp --name "${NAME}" test.yml
test/cases/000_build/000_formats/001_iso-bios/test.sh:19	linuxkit build --format iso-bios --name "${NAME}" ../test.yml
test/cases/010_platforms/000_qemu/010_run_iso/test.sh:18	linuxkit build --format iso-bios --name "${NAME}" test.yml
test/cases/000_build/000_formats/002_iso-efi/test.sh:19	linuxkit build --format iso-efi --name "${NAME}" ../test.yml
test/cases/010_platforms/000_qemu/020_run_efi/test.sh:28	linuxkit build --format iso-efi --name "${NAME}" test.yml
README.md:67	linuxkit build --format iso-efi linuxkit.yml
test/cases/000_build/000_formats/013_iso-efi-initrd/test.sh:19	linuxkit build --format iso-efi-initrd --name "${NAME}" ../test.yml
test/cases/000_build/000_formats/014_kernel+erofs/test.sh:19	linuxkit build --format kernel+erofs --name "${NAME}" ../test.yml
test/cases/000_build/000_formats/000_kernel+initrd/test.sh:19	linuxkit build --format kernel+initrd --name "${NAME}" ../test.yml
test/cases/010_platforms/000_qemu/000_run_kernel+initrd/test.sh:18	linuxkit build --format kernel+initrd --name "${NAME}" test.yml
test/cases/040_packages/005_extend/000_ext4/test.sh:27	linuxkit build --format kernel+initrd --name ${NAME_EXTEND} test.yml
test/cases/020_kernel/200_namespace/010_veth/010_echo-tcp-ipv4-short-1con-single-reverse/test.sh:19	linuxkit build --format kernel+initrd --name ${NAME} ../../common.yml test.yml
test/cases/000_build/020_binds/test.sh:22	linuxkit build --format kernel+initrd --name ${NAME} test.yml
test/cases/040_packages/013_mkimage/test.sh:22	linuxkit build --format kernel+initrd mkimage.yml
test/cases/040_packages/013_mkimage/test.sh:21	linuxkit build --format kernel+initrd run.yml
test/cases/000_build/000_formats/012_kernel+iso/test.sh:19	linuxkit build --format kernel+iso --name "${NAME}" ../test.yml
test/cases/000_build/000_formats/011_kernel+squashfs/test.sh:19	linuxkit build --format kernel+squashfs --name "${NAME}" ../test.yml
test/cases/010_platforms/000_qemu/005_run_kernel+squashfs/test.sh:18	linuxkit build --format kernel+squashfs --name "${NAME}" test.yml
test/cases/000_build/000_formats/010_qcow2_bios/test.sh:19	linuxkit build --format qcow2-bios --name "${NAME}" ../test.yml
test/cases/010_platforms/000_qemu/030_run_qcow_bios/test.sh:18	linuxkit build --format qcow2-bios --name "${NAME}" test.yml
test/cases/000_build/000_formats/008_raw_bios/test.sh:19	linuxkit build --format raw-bios --name "${NAME}" ../test.yml
test/cases/010_platforms/000_qemu/040_run_raw_bios/test.sh:18	linuxkit build --format raw-bios --name "${NAME}" test.yml
README.md:66	linuxkit build --format raw-bios linuxkit.yml
test/cases/000_build/000_formats/009_raw_efi/test.sh:19	linuxkit build --format raw-efi --name "${NAME}" ../test.yml
test/cases/010_platforms/000_qemu/060_run_raw_efi/test.sh:28	linuxkit build --format raw-efi --name "${NAME}" test.yml
test/cases/000_build/050_sbom/test.sh:23	linuxkit build --format tar --name "${NAME}" ./test.yml
test/cases/000_build/000_formats/006_vhd/test.sh:20	linuxkit build --format vhd --name "${NAME}" ../test.yml
test/cases/000_build/000_formats/007_vmdk/test.sh:19	linuxkit build --format vmdk --name "${NAME}" ../test.yml
test/cases/040_packages/005_extend/000_ext4/test.sh:22	linuxkit build --name "${NAME_CREATE}" --format kernel+initrd test-create.yml
test/cases/040_packages/005_extend/002_xfs/test.sh:27	linuxkit build --name "${NAME_EXTEND}" --format kernel+initrd test.yml
test/cases/000_build/010_reproducible/002_kernel+initrd/test.sh:19	linuxkit build --no-sbom --format kernel+initrd --name "${NAME}-1" ../test.yml
test/cases/000_build/010_reproducible/002_kernel+initrd/test.sh:20	linuxkit build --no-sbom --format kernel+initrd --name "${NAME}-2" ../test.yml
test/cases/000_build/010_reproducible/004_input_tar/test.sh:22	linuxkit build --no-sbom --format tar --input-tar "${NAME}-1.tar" --o "${NAME}-2.tar" ../test.yml
test/cases/000_build/001_tarheaders/test.sh:21	linuxkit build --no-sbom --format tar --name "${NAME}" ./test.yml
test/cases/000_build/010_reproducible/000_tar/test.sh:22	linuxkit build --no-sbom --format tar --name "${NAME}-1" ../test.yml
test/cases/000_build/010_reproducible/000_tar/test.sh:21	linuxkit build --no-sbom --format tar --name "${NAME}-2" ../test.yml
test/cases/000_build/010_reproducible/004_input_tar/test.sh:21	linuxkit build --no-sbom --format tar --o "${NAME}-1.tar" ../test.yml
test/cases/000_build/060_input_tar/010_same_filename/test.sh:25	linuxkit build --no-sbom --format tar --o "${NAME}-1.tar" ./test.yml
test/cases/000_build/060_input_tar/000_build/test.sh:23	linuxkit build --no-sbom --format tar --o "${NAME}-1.tar" ./test1.yml
docs/platform-aws.md:25	linuxkit build -format aws examples/aws.yml
docs/platform-gcp.md:57	linuxkit build -format gcp myprefix.yml
examples/docker-for-mac.md:13	linuxkit build -format iso-efi docker-for-mac.yml
docs/platform-scaleway.md:20	linuxkit build -format iso-efi examples/scaleway.yml
contrib/crosvm/README.md:32	linuxkit build -format kernel+squashfs -decompress-kernel minimal.yml
docs/platform-rpi3.md:25	linuxkit build -format rpi3 <YAML>
docs/platform-azure.md:26	linuxkit build -format vhd azure.yml
README.md:128	linuxkit build -format vhd linuxkit.yml
projects/compose/Makefile:23	linuxkit build -name compose-dynamic -dir dist/ compose-dynamic.yml
projects/compose/Makefile:27	linuxkit build -name compose-static -dir dist/ compose-static.yml
test/cases/000_build/060_input_tar/000_build/test.sh:24	linuxkit build -v 2 --no-sbom --format tar --input-tar "${NAME}-1.tar" --o "${NAME}-2.tar" ./test2.yml
README.md:72	linuxkit build <name>.yml
docs/platform-equinixmetal.md:70	linuxkit build equinixmetal.yml
README.md:124	linuxkit build file.yml
docs/yaml.md:470	linuxkit build https://example.com/foo.yml
test/cases/000_build/091_validate_linuxkit_yaml/test.sh:13	linuxkit build linuxkit.yaml
README.md:64	linuxkit build linuxkit.yml
docs/platform-equinixmetal.md:62	linuxkit build platform-equinixmetal.yml
pkg/swap/README.md:81	linuxkit build swap.yml
test/pkg/virtsock/README.md:8	linuxkit build tests/cases/test-virtsock-server.yml
docs/image-cache.md:84	linuxkit cache import foo.tar
.github/workflows/ci.yml:155	linuxkit cache ls
kernel/Makefile:158	linuxkit cache push $(HASHED_IMAGE)
kernel/Makefile:159	linuxkit cache push $(HASHED_IMAGE) --remote-name $(PLAIN_IMAGE)
docs/metadata.md:90	linuxkit metadata create meta.iso STRING
tools/Makefile:17	linuxkit pkg build "$$d"
pkg/Makefile:19	linuxkit pkg build $(OPTIONS) $(DIRS)
pkg/Makefile:22	linuxkit pkg build $(OPTIONS) --force $(DIRS)
tools/Makefile:20	linuxkit pkg build --force "$$d"
test/cases/000_build/056_build_args/001_build_arg_cli/test.sh:11	linuxkit pkg build --force --build-arg-file build-args .
test/cases/000_build/055_dockerfiles/001_missing_in_yml_found_cli/test.sh:11	linuxkit pkg build --force --dockerfile Dockerfile .
test/cases/000_build/055_dockerfiles/002_found_in_yml_missing_cli/test.sh:12	linuxkit pkg build --force --dockerfile nosuchfile .
test/cases/000_build/057_pkg_tag/001_tag_cli/test.sh:11	linuxkit pkg build --force --tag cli .
test/cases/000_build/030_build_args/test.sh:14	linuxkit pkg build --force .
test/cases/000_build/040_chained_builds/test.sh:16	linuxkit pkg build --force ./build1
test/cases/000_build/040_chained_builds/test.sh:17	linuxkit pkg build --force ./build2
docs/troubleshooting.md:31	linuxkit pkg build --force <path>
docs/packages.md:131	linuxkit pkg build --skip-platforms linux/s390x ...
docs/packages.md:355	linuxkit pkg build -org=wombat -hash=foo push
docs/packages.md:345	linuxkit pkg build -org=wombat push
docs/packages.md:336	linuxkit pkg build -org=wombat «path-to-package»
kernel/Makefile:181	linuxkit pkg build . $(FORCE) --platforms $(BUILD_PLATFORM) --build-yml ./$(COMMON_DIR)/build-$(TOOL).yml --tag "$(KERNEL_VERSION)-$(SERIES_HASH)" --build-arg-file $(KERNEL_SERIES)/build-args
kernel/Makefile:139	linuxkit pkg build . $(FORCE) --platforms $(BUILD_PLATFORM) --build-yml ./$(COMMON_DIR)/build-kernel.yml --hash $(SERIES_HASH) --tag "$*-dbg-{{.Hash}}" --build-arg-file $(KERNEL_SERIES)/build-args --build-arg-file $(COMMON_DIR)/build-args-debug
kernel/Makefile:134	linuxkit pkg build . $(FORCE) --platforms $(BUILD_PLATFORM) --build-yml ./$(COMMON_DIR)/build-kernel.yml --hash $(SERIES_HASH) --tag "$*-{{.Hash}}" --build-arg-file $(KERNEL_SERIES)/build-args
test/cases/000_build/050_sbom/test.sh:20	linuxkit pkg build ./package1 ./package2
docs/packages.md:111	linuxkit pkg build pkg/foo
docs/packages.md:112	linuxkit pkg build pkg/foo --docker
tools/Makefile:10	linuxkit pkg push "$$d"
test/pkg/Makefile:7	linuxkit pkg push $(OPTIONS) $(DIRS)
pkg/Makefile:13	linuxkit pkg push $(OPTIONS) $(PUSHOPTIONS) $(DIRS)
pkg/Makefile:16	linuxkit pkg push $(OPTIONS) $(PUSHOPTIONS) --force $(DIRS)
test/pkg/Makefile:10	linuxkit pkg push $(OPTIONS) --force $(DIRS)
tools/Makefile:14	linuxkit pkg push --force "$$d"
docs/troubleshooting.md:32	linuxkit pkg push <path>
docs/packages.md:310	linuxkit pkg push «path-to-package»
tools/Makefile:23	linuxkit pkg show-tag "$$d"
test/cases/000_build/056_build_args/005_build_arg_special_yaml/test.sh:49	linuxkit pkg show-tag "${TMPDIR1}"
test/cases/000_build/056_build_args/005_build_arg_special_yaml/test.sh:50	linuxkit pkg show-tag "${TMPDIR2}"
pkg/Makefile:25	linuxkit pkg show-tag $(OPTIONS) $(DIRS)
scripts/update-component-sha.sh:100	linuxkit pkg show-tag $1
test/cases/000_build/056_build_args/010_build_arg_special_multiple_yaml/test.sh:59	linuxkit pkg show-tag --build-yml "${yml}" .
test/cases/000_build/056_build_args/005_build_arg_special_yaml/test.sh:51	linuxkit pkg show-tag .
kernel/Makefile:191	linuxkit pkg show-tag . --build-yml ./$(COMMON_DIR)/build-$(TOOL).yml --tag "$(KERNEL_VERSION)"))
kernel/Makefile:190	linuxkit pkg show-tag . --build-yml ./$(COMMON_DIR)/build-$(TOOL).yml --tag "$(KERNEL_VERSION)-$(SERIES_HASH)"))
kernel/Makefile:209	linuxkit pkg show-tag . --build-yml ./$(COMMON_DIR)/build-kernel.yml --hash $(SERIES_HASH) --tag "$*-dbg-{{.Hash}}"
kernel/Makefile:164	linuxkit pkg show-tag . --build-yml ./$(COMMON_DIR)/build-kernel.yml --hash $(SERIES_HASH) --tag "$*-dbg-{{.Hash}}"))
kernel/Makefile:203	linuxkit pkg show-tag . --build-yml ./$(COMMON_DIR)/build-kernel.yml --hash $(SERIES_HASH) --tag "$*-{{.Hash}}"
kernel/Makefile:156	linuxkit pkg show-tag . --build-yml ./$(COMMON_DIR)/build-kernel.yml --hash $(SERIES_HASH) --tag "$*-{{.Hash}}"))
kernel/Makefile:157	linuxkit pkg show-tag . --build-yml ./$(COMMON_DIR)/build-kernel.yml --tag "$*"))
kernel/Makefile:165	linuxkit pkg show-tag . --build-yml ./$(COMMON_DIR)/build-kernel.yml --tag "$*-dbg"))
docs/yaml.md:464	linuxkit pkg show-tag ../pkg/init
test/cases/000_build/050_sbom/README.md:22	linuxkit pkg show-tag ./package1
test/cases/000_build/050_sbom/README.md:23	linuxkit pkg show-tag ./package2
docs/packages.md:444	linuxkit pkg show-tag /usr/local/foo
docs/yaml.md:456	linuxkit pkg show-tag <dir>
docs/packages.md:438	linuxkit pkg show-tag <path>
docs/packages.md:445	linuxkit pkg show-tag foo
docs/packages.md:316	linuxkit pkg show-tag «path-to-package»
test/cases/_lib/lib.sh:18	linuxkit run $@
test/cases/040_packages/005_extend/000_ext4/test.sh:23	linuxkit run --disk file="${DISK}",format=raw,size=256M "${NAME_CREATE}"
test/cases/040_packages/005_extend/002_xfs/test.sh:23	linuxkit run --disk file="${DISK}",format=raw,size=512M "${NAME_CREATE}"
pkg/swap/README.md:82	linuxkit run --disk size=4G swap
README.md:74	linuxkit run --help
projects/compose/Makefile:33	linuxkit run -mem 2048 dist/compose-static
docs/platform-hyperkit.md:130	linuxkit run -publish 2222:22/tcp sshd
README.md:71	linuxkit run <name>
README.md:71	linuxkit run <name>.<format>
projects/compose/Makefile:30	linuxkit run dist/compose-dynamic
README.md:125	linuxkit run file
test/cases/010_platforms/000_qemu/040_run_raw_bios/test.sh:20	linuxkit run qemu "${NAME}-bios.img"
test/cases/010_platforms/000_qemu/030_run_qcow_bios/test.sh:20	linuxkit run qemu "${NAME}.qcow2"
test/cases/010_platforms/000_qemu/050_run_aws/test.sh:20	linuxkit run qemu "${NAME}.raw"
test/cases/040_packages/013_mkimage/test.sh:24	linuxkit run qemu --disk disk.qcow2,size=200M,format=qcow2 --disk tarball.img,format=raw --kernel mkimage
test/cases/010_platforms/000_qemu/010_run_iso/test.sh:20	linuxkit run qemu --iso "${NAME}.iso"
test/cases/010_platforms/000_qemu/020_run_efi/test.sh:30	linuxkit run qemu --iso --uefi "${NAME}-efi.iso"
docs/platform-qemu.md:29	linuxkit run qemu --iso --uefi <path to iso>
docs/platform-qemu.md:28	linuxkit run qemu --iso <path to iso>
test/cases/010_platforms/000_qemu/000_run_kernel+initrd/test.sh:22	linuxkit run qemu --kernel "${NAME}"
test/cases/010_platforms/000_qemu/005_run_kernel+squashfs/test.sh:22	linuxkit run qemu --squashfs "${NAME}"
docs/platform-qemu.md:27	linuxkit run qemu --squashfs <path to directory>
test/cases/010_platforms/000_qemu/060_run_raw_efi/test.sh:30	linuxkit run qemu --uefi "${NAME}-efi.img"
docs/platform-qemu.md:31	linuxkit run qemu disk.img
docs/platform-qemu.md:30	linuxkit run qemu disk.qcow2
test/cases/040_packages/007_getty-containerd/test.exp:2	linuxkit run test-ctr
docs/platform-equinixmetal.md:88	linuxkit serve
docs/platform-hyperv.md:11	linuxkit run --disk size=1 linuxkit-efi.iso
"#;

/// The value a variable of the command lines stands for.
fn sample(name: &str) -> &'static str {
    match name {
        "NAME" | "NAME_CREATE" | "NAME_EXTEND" => "test",
        "CACHEDIR" | "CACHE_DIR" => "/tmp/linuxkit-cache",
        "PLATFORM" | "BUILD_PLATFORM" => "linux/amd64",
        "targetarch" => "amd64",
        "TMPDIR1" | "TMPDIR2" | "d" | "$d" | "1" => "pkg/init",
        "yml" => "build.yml",
        "extra_args" | "OPTIONS" | "PUSHOPTIONS" => "",
        "FORCE" => "--force",
        "DIRS" => "pkg/init pkg/runc",
        "current" | "HASHED_IMAGE" => "linuxkit/init:8f1e9a3c",
        "PLAIN_IMAGE" => "linuxkit/init:latest",
        "REGISTRY_IP" => "127.0.0.1",
        "REGISTRY_PORT" => "5000",
        "REGISTRY_USER" => "user",
        "REGISTRY_PASS" => "secret",
        "LINUXKIT_EXAMPLES_DIR" => "examples",
        "COMMON_DIR" => "common",
        "TOOL" => "perf",
        "KERNEL_VERSION" | "*" => "6.6.71",
        "SERIES_HASH" => "c0ffee",
        "KERNEL_SERIES" => "6.6.x",
        "DISK" => "disk.img",
        "MKFILE_DIR" => "projects/clear-containers/x",
        "pwd" => "/tmp",
        "@" => "hello",
        _ => "x",
    }
}

/// Split a command line as a shell would: quotes group, variables (`$X`, `${X}`, `$(X)`,
/// `$$X` of make) expand to their samples, an unquoted expansion splits on spaces.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match (quote, c) {
            (None, ' ' | '\t') => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '<') => {
                // A placeholder of the docs, `<path to iso>`: one word.
                let end = chars[i..]
                    .iter()
                    .position(|c| *c == '>')
                    .map_or(chars.len(), |p| i + p);
                word.extend(&chars[i..=end.min(chars.len() - 1)]);
                in_word = true;
                i = end;
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.push(c),
            (_, '$') => {
                let rest: String = chars[i + 1..].iter().collect();
                let (name, used) = if let Some(r) = rest.strip_prefix('{') {
                    let end = r.find('}').unwrap_or(r.len());
                    (r[..end].to_string(), end + 2)
                } else if let Some(r) = rest.strip_prefix('(') {
                    let end = r.find(')').unwrap_or(r.len());
                    (r[..end].to_string(), end + 2)
                } else if let Some(r) = rest.strip_prefix('$') {
                    let n: String = r
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    let len = n.len();
                    (n, len + 1)
                } else {
                    let n: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '*' || *c == '@')
                        .take(
                            if rest.starts_with(['*', '@'])
                                || rest.starts_with(|c: char| c.is_ascii_digit())
                            {
                                1
                            } else {
                                usize::MAX
                            },
                        )
                        .collect();
                    let len = n.len();
                    (n, len)
                };
                let value = sample(&name);
                if quote.is_some() {
                    word.push_str(value);
                    in_word = true;
                } else {
                    for (k, part) in value.split(' ').enumerate() {
                        if k > 0 && in_word {
                            words.push(std::mem::take(&mut word));
                        }
                        if !part.is_empty() {
                            word.push_str(part);
                            in_word = true;
                        }
                    }
                }
                i += used;
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
        i += 1;
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Whether kiln's parser, run as `program`, takes `words` (a help request counts).
fn accepts(program: &'static str, words: &[String]) -> Result<(), String> {
    let mut args: Vec<std::ffi::OsString> = vec![program.into()];
    args.extend(words[1..].iter().map(Into::into));
    let command = Cli::command().name(program);
    let args = compat::normalize(args, &compat::Flags::of(&command))?;
    match command.try_get_matches_from(args) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn every_linuxkit_command_line_parses() {
    let mut refused = Vec::new();
    let mut count = 0;
    for line in LINES.lines().filter(|l| !l.trim().is_empty()) {
        let (source, command) = line.split_once('\t').expect("SOURCE<TAB>COMMAND");
        let words = words(command);
        assert_eq!(words[0], "linuxkit", "{source}: {command}");
        for program in ["linuxkit", "kiln"] {
            count += 1;
            if let Err(e) = accepts(program, &words) {
                refused.push(format!(
                    "{source}: {program}{}\n    {words:?}\n    {e}",
                    &command[8..]
                ));
            }
        }
    }
    assert!(count > 300, "{count} command lines");
    assert!(
        refused.is_empty(),
        "{} of {count} refused:\n{}",
        refused.len(),
        refused.join("\n")
    );
}

#[test]
fn words_expand_like_a_shell() {
    assert_eq!(
        words(r#"linuxkit build --name "${NAME}-1" $(OPTIONS) --x=$(DIRS) 'a b'"#),
        [
            "linuxkit",
            "build",
            "--name",
            "test-1",
            "--x=pkg/init",
            "pkg/runc",
            "a b"
        ]
    );
}

/// Every flag of LinuxKit 1.7.1 and 1.8.2 for the same commands, from its source
/// (src/cmd/linuxkit/*.go), each in a command line of its own.
const EVERY_FLAG: &[&str] = &[
    // The root command's (global) flags.
    "linuxkit --cache /tmp/c --mirror http://127.0.0.1:5000 --cert-file ca.pem -q version",
    "linuxkit --mirror docker.io=http://127.0.0.1:5000 -v 3 version",
    "linuxkit --verbose=2 cache ls",
    // build
    "linuxkit build --name n --dir d --size 2G --pull --decompress-kernel --arch arm64 -f kernel+initrd --format tar,kernel+initrd m.yml",
    "linuxkit build --o - --input-tar old.tar --cache /tmp/c --no-sbom m.yml",
    "linuxkit build --sbom-current-time --sbom-output sbom.json --dry-run --docker a.yml b.yml",
    // run (shared by every backend) and run qemu
    "linuxkit run qemu --cpus 2 --mem 512 --disk file=d.img,size=1G,format=raw --gui --uefi --iso x.iso",
    "linuxkit run qemu --squashfs --kernel --state st --data d --fw OVMF.fd --accel kvm:tcg --arch x86_64 p",
    "linuxkit run qemu --data-file f --qemu /usr/bin/qemu-system-x86_64 --detached --networking user --publish 22:22/tcp p",
    "linuxkit run qemu --usb --device virtio-rng-pci --virtiofsd /usr/libexec/virtiofsd --virtiofs /srv p",
    "linuxkit run --cpus 2 --mem 512 --disk size=1G p",
    // pkg (shared by its subcommands), pkg build, pkg push, pkg show-tag
    "linuxkit pkg --disable-cache --nonetwork --org o --build-yml b.yml --hash h --tag t --hash-commit HEAD show-tag d",
    "linuxkit pkg show-tag --enable-cache=false --network=false --hash-path .. --force-dirty --dev --registry-creds r=u:p --canonical d",
    "linuxkit pkg build --force --pull --push --ignore-cached --docker --platforms linux/amd64 --builders linux/amd64=default d",
    "linuxkit pkg build --skip-platforms linux/s390x --builder-name b --builder-image moby/buildkit:v0.26.3 --builder-config c.toml --builder-restart d",
    "linuxkit pkg build --precache-images --cache /tmp/c --release v1 --nobuild --manifest=false --sbom-scanner false d",
    "linuxkit pkg build --dockerfile Dockerfile.x --build-arg-file a --build-arg-file b --progress plain --ssh default --dry-run d",
    "linuxkit pkg push --force d",
    // cache
    "linuxkit cache clean --published-only",
    "linuxkit cache rm --published-only linuxkit/init:1",
    "linuxkit cache ls",
    "linuxkit cache export --platform linux/amd64 --outfile - --format filesystem --name x:1 linuxkit/init:1",
    "linuxkit cache import -",
    "linuxkit cache pull linuxkit/init:1",
    "linuxkit cache push --remote-name r/x:1 --with-arch-tags --override linuxkit/init:1",
    // metadata, serve, version
    "linuxkit metadata create meta.iso '{\"a\":1}'",
    "linuxkit serve --port 127.0.0.1:8080 --directory .",
    "linuxkit version --short",
    "linuxkit version --commit",
];

#[test]
fn every_linuxkit_flag_parses() {
    let refused: Vec<String> = EVERY_FLAG
        .iter()
        .flat_map(|line| ["linuxkit", "kiln"].map(|p| (p, *line)))
        .filter_map(|(program, line)| {
            accepts(program, &words(line))
                .err()
                .map(|e| format!("{program}{}\n    {e}", &line[8..]))
        })
        .collect();
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
}
