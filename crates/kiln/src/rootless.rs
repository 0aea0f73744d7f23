//! Rootless builds: when kiln is not root, the commands that run Dockerfile steps run again,
//! unchanged, in a new user and mount namespace where kiln is root. The user is uid and gid 0
//! there, and their subordinate ranges (/etc/subuid, /etc/subgid) are 1..N, so that the files
//! of an image keep the owners the Dockerfile gives them: on disk they belong to the matching
//! subordinate ids, in the image to the ids the build gave. The builder and the runtime then
//! run as they do as root, and cope with what a user namespace cannot do (see
//! `kiln_runtime::userns`). See docs/rootless.md.

use anyhow::Context as _;
use kiln_runtime::userns;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::Command;

/// When not root, run this command again in a user namespace mapped from the user's
/// subordinate ids, and exit with its status: this returns only as root (or in that
/// namespace, where kiln is root). An error says what is missing (a subordinate range,
/// newuidmap).
pub fn run_as_root_of_a_user_namespace() -> anyhow::Result<()> {
    if userns::is_root() {
        return Ok(());
    }
    let maps =
        userns::maps_for_current_user(userns::SUBUID_FILE.as_ref(), userns::SUBGID_FILE.as_ref())
            .context("a rootless build (kiln is not root)")?;
    let ids: u64 = maps.uids.iter().map(|r| u64::from(r.count)).sum();
    tracing::info!("not root: building in a user namespace with {ids} uids (0 is this user)");
    let mut args = std::env::args_os();
    let mut cmd = Command::new("/proc/self/exe");
    if let Some(argv0) = args.next() {
        // The name decides the flavour (kiln or linuxkit).
        cmd.arg0(argv0);
    }
    cmd.args(args);
    let mut child = userns::spawn_in_user_namespace(cmd, &maps)
        .context("a rootless build (kiln is not root)")?;
    let status = child
        .wait()
        .context("waiting for the build in the user namespace")?;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    std::process::exit(code)
}
