//! User namespaces for rootless builds: an unprivileged user's subordinate id ranges
//! (`/etc/subuid`, `/etc/subgid`), the maps they give ([`IdMaps`]: the user as 0, the ranges
//! as 1..N), and starting a program in a new user namespace with those maps written by the
//! set-uid helpers `newuidmap` and `newgidmap` ([`spawn_in_user_namespace`]).
//!
//! In such a namespace the program is root with every capability over what the namespace owns:
//! it can make mount namespaces, mount overlayfs (with `userxattr`), tmpfs, proc and bind
//! mounts, and change a file's owner to any mapped id, which on disk is the matching
//! subordinate id. It cannot make device nodes (other than overlayfs' whiteouts), write the
//! host's cgroups or raise a hard resource limit. The runtime copes with what it cannot do
//! (see `rootfs`): /proc and /sys are bound from the host where a fresh mount is refused, and
//! remounts keep the flags the kernel locked.

use crate::error::{RuntimeError, errno};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// Where the subordinate uid ranges are listed.
pub const SUBUID_FILE: &str = "/etc/subuid";
/// Where the subordinate gid ranges are listed.
pub const SUBGID_FILE: &str = "/etc/subgid";

/// One line of a uid or gid map: `count` ids from `inside` in the namespace are `outside` on
/// the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first id in the namespace.
    pub inside: u32,
    /// The first id on the host.
    pub outside: u32,
    /// How many.
    pub count: u32,
}

/// The uid and gid maps of a rootless namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMaps {
    /// The uid map.
    pub uids: Vec<IdRange>,
    /// The gid map.
    pub gids: Vec<IdRange>,
}

/// Why an unprivileged user cannot have a rootless namespace.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// The user has no subordinate range in `file`.
    #[error(
        "user {user} (uid {uid}) has no subordinate {what} range in {file}: kiln maps the ids \
         of image files into one; ask an administrator to add one, for example `usermod \
         --add-subuids 100000-165535 --add-subgids 100000-165535 {user}` (or a line \
         `{user}:100000:65536` in /etc/subuid and /etc/subgid)"
    )]
    NoRange {
        /// The user's name (or uid when it has none).
        user: String,
        /// The user's uid.
        uid: u32,
        /// `uid` or `gid`.
        what: &'static str,
        /// The file looked in.
        file: PathBuf,
    },
    /// A set-uid helper is missing.
    #[error(
        "{helper} is not installed (or not on PATH): kiln needs it to map subordinate ids into \
         the user namespace of a rootless build; install the `uidmap` package (`apt-get \
         install uidmap`, `dnf install shadow-utils`)"
    )]
    NoHelper {
        /// `newuidmap` or `newgidmap`.
        helper: &'static str,
    },
    /// Reading a file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The kernel refused a new user namespace.
    #[error(
        "cannot create a user namespace: {0}; unprivileged user namespaces may be disabled \
         (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0), or a \
         container's seccomp profile refuses them"
    )]
    Unshare(#[source] io::Error),
    /// Writing a map failed.
    #[error("{helper} {args}: {message}")]
    Map {
        /// `newuidmap` or `newgidmap`.
        helper: &'static str,
        /// Its arguments.
        args: String,
        /// What went wrong (its output, or the error starting it).
        message: String,
    },
    /// Starting the program failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// The subordinate ranges (first id, count) of the user `name` with id `id` in the text of
/// `/etc/subuid` or `/etc/subgid`: lines `NAME:FIRST:COUNT` or `ID:FIRST:COUNT`, in order.
pub fn subordinate_ranges(text: &str, name: &str, id: u32) -> Vec<(u32, u32)> {
    let id = id.to_string();
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let mut parts = line.split(':');
            let (who, first, count) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || !(who == name || who == id) {
                return None;
            }
            let first: u32 = first.trim().parse().ok()?;
            let count: u32 = count.trim().parse().ok()?;
            (count > 0 && first.checked_add(count - 1).is_some()).then_some((first, count))
        })
        .collect()
}

/// The map of a rootless namespace: `own` (the user's id) as 0, then the subordinate
/// `ranges` one after another from 1. Ranges that would overflow the namespace's ids are cut.
pub fn map_with(own: u32, ranges: &[(u32, u32)]) -> Vec<IdRange> {
    let mut map = vec![IdRange {
        inside: 0,
        outside: own,
        count: 1,
    }];
    let mut next: u32 = 1;
    for &(first, count) in ranges {
        // The kernel takes at most 340 lines; no user has that many ranges.
        if map.len() >= 340 {
            break;
        }
        let count = count.min(u32::MAX - next);
        if count == 0 {
            break;
        }
        map.push(IdRange {
            inside: next,
            outside: first,
            count,
        });
        next += count;
    }
    map
}

/// The calling user's name, for /etc/subuid: from the password database, else the uid.
fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// The maps of a rootless namespace for the calling user, from `subuid` and `subgid` (the
/// files [`SUBUID_FILE`] and [`SUBGID_FILE`] normally): the user's uid and gid as 0, their
/// subordinate ranges from 1. An error says what to add when a range is missing.
pub fn maps_for_current_user(subuid: &Path, subgid: &Path) -> Result<IdMaps, UsernsError> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let name = user_name(uid);
    let read = |path: &Path| match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        // No file: no ranges.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(UsernsError::Read {
            path: path.to_path_buf(),
            source,
        }),
    };
    let mut maps = Vec::new();
    for (path, what, own) in [(subuid, "uid", uid), (subgid, "gid", gid)] {
        // Subordinate gid ranges are listed by user name (or uid) too.
        let ranges = subordinate_ranges(&read(path)?, &name, uid);
        if ranges.is_empty() {
            return Err(UsernsError::NoRange {
                user: name,
                uid,
                what,
                file: path.to_path_buf(),
            });
        }
        maps.push(map_with(own, &ranges));
    }
    let gids = maps.pop().unwrap_or_default();
    let uids = maps.pop().unwrap_or_default();
    Ok(IdMaps { uids, gids })
}

/// Whether the calling process runs as root (effective uid 0, in whatever user namespace it
/// is in).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Where `program` is on PATH, if it is.
fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The set-uid helpers that write the maps: newuidmap and newgidmap.
pub fn map_helpers() -> Result<(PathBuf, PathBuf), UsernsError> {
    let uid = on_path("newuidmap").ok_or(UsernsError::NoHelper {
        helper: "newuidmap",
    })?;
    let gid = on_path("newgidmap").ok_or(UsernsError::NoHelper {
        helper: "newgidmap",
    })?;
    Ok((uid, gid))
}

/// Whether the calling process is in a user namespace other than the initial one, as a
/// rootless build is: the one answer the unpacker and the builder use too.
pub use kiln_fs::unpack::in_user_namespace;

/// Write `map` for the process `pid` with `helper` (newuidmap or newgidmap).
fn write_map(
    helper: &Path,
    name: &'static str,
    pid: u32,
    map: &[IdRange],
) -> Result<(), UsernsError> {
    let mut args = vec![pid.to_string()];
    for r in map {
        args.extend([
            r.inside.to_string(),
            r.outside.to_string(),
            r.count.to_string(),
        ]);
    }
    let joined = args.join(" ");
    let out = Command::new(helper)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| UsernsError::Map {
            helper: name,
            args: joined.clone(),
            message: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(UsernsError::Map {
        helper: name,
        args: joined,
        message: format!(
            "{} ({}); check the ranges in {SUBUID_FILE} and {SUBGID_FILE} and that the helper \
             is set-uid root (or has CAP_SETUID/CAP_SETGID file capabilities)",
            if text.is_empty() {
                "failed".to_string()
            } else {
                text
            },
            out.status
        ),
    })
}

/// Start `cmd` in a new user namespace with `maps` written by `newuidmap` and `newgidmap`
/// (found by [`map_helpers`]). The child unshares the namespace, waits until the maps are
/// written, and then executes the program, which starts as uid and gid 0 in the namespace
/// with every capability there. It also gets `SIGTERM` when the calling thread ends.
pub fn spawn_in_user_namespace(mut cmd: Command, maps: &IdMaps) -> Result<Child, UsernsError> {
    let (newuidmap, newgidmap) = map_helpers()?;
    let command = cmd.get_program().to_string_lossy().into_owned();
    let pipe_err = |e: nix::Error| {
        UsernsError::Runtime(RuntimeError::Spawn {
            command: command.clone(),
            source: errno(e),
        })
    };
    let (ready_read, ready_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(pipe_err)?;
    let (go_read, go_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(pipe_err)?;
    let go_write_raw = go_write.as_raw_fd();
    crate::sys::enter_user_namespace_before_exec(&mut cmd, ready_write, go_read, go_write_raw);
    std::thread::scope(|scope| {
        // spawn() returns once the child has executed the program: the maps are written beside
        // it, while the child waits.
        let helper = scope.spawn(move || -> Result<(), Option<UsernsError>> {
            let mut message = [0u8; 8];
            let mut file = fs::File::from(ready_read);
            io::Read::read_exact(&mut file, &mut message).map_err(|_| None)?;
            let (pid, failed) = message.split_at(4);
            let failed = i32::from_ne_bytes(failed.try_into().unwrap_or_default());
            if failed != 0 {
                return Err(Some(UsernsError::Unshare(io::Error::from_raw_os_error(
                    failed,
                ))));
            }
            let pid = u32::from_ne_bytes(pid.try_into().unwrap_or_default());
            write_map(&newuidmap, "newuidmap", pid, &maps.uids).map_err(Some)?;
            write_map(&newgidmap, "newgidmap", pid, &maps.gids).map_err(Some)?;
            nix::unistd::write(&go_write, b"g").map_err(|e| {
                Some(UsernsError::Runtime(RuntimeError::Spawn {
                    command: "the user namespace's first process".into(),
                    source: errno(e),
                }))
            })?;
            Ok(())
        });
        let spawned = cmd.spawn();
        // The pre-exec hook's copies of the pipes go with the command: the helper's read ends
        // if the child ended before it wrote.
        drop(cmd);
        let mapped = helper.join().unwrap_or(Err(None));
        match (spawned, mapped) {
            (Ok(child), Ok(())) => Ok(child),
            (Ok(mut child), Err(e)) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e.unwrap_or_else(|| {
                    UsernsError::Runtime(RuntimeError::Config(
                        "the user namespace's first process ended before its maps were written"
                            .into(),
                    ))
                }))
            }
            (Err(_), Err(Some(e))) => Err(e),
            (Err(source), _) => Err(UsernsError::Runtime(RuntimeError::Spawn {
                command: command.clone(),
                source,
            })),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_found_by_name_or_uid() {
        let text = "# comment\nalice:100000:65536\nbob:165536:65536\n1001:231072:1000\n\
                    bad line\nalice:300000:10\ncarol:1:0\ndave:4294967295:2\n";
        assert_eq!(
            subordinate_ranges(text, "alice", 1000),
            [(100_000, 65_536), (300_000, 10)]
        );
        assert_eq!(subordinate_ranges(text, "eve", 1001), [(231_072, 1000)]);
        assert!(subordinate_ranges(text, "carol", 7).is_empty());
        assert!(subordinate_ranges(text, "dave", 8).is_empty());
        assert!(subordinate_ranges("", "alice", 1000).is_empty());
    }

    #[test]
    fn the_user_is_root_and_the_ranges_follow() {
        assert_eq!(
            map_with(1000, &[(100_000, 65_536), (300_000, 10)]),
            [
                IdRange {
                    inside: 0,
                    outside: 1000,
                    count: 1
                },
                IdRange {
                    inside: 1,
                    outside: 100_000,
                    count: 65_536
                },
                IdRange {
                    inside: 65_537,
                    outside: 300_000,
                    count: 10
                },
            ]
        );
        // Never past the last id.
        let big = map_with(5, &[(1, u32::MAX - 1), (10, 10)]);
        assert_eq!(big.len(), 2);
        assert_eq!(big[1].count, u32::MAX - 1);
    }

    #[test]
    fn a_missing_range_says_what_to_add() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (uid, gid) = (dir.path().join("subuid"), dir.path().join("subgid"));
        fs::write(&uid, "someone-else:100000:65536\n").expect("write");
        let e = maps_for_current_user(&uid, &gid).expect_err("no range");
        let text = e.to_string();
        assert!(text.contains("usermod --add-subuids"), "{text}");
        assert!(text.contains(&uid.display().to_string()), "{text}");
    }
}
