//! Paths of the container resolved inside its root, never out of it: a symbolic link in the
//! image is followed as if the root were `/` (an absolute link starts again at the root, `..`
//! stops there), so an image whose `/etc` links to a host directory cannot make the runtime
//! create, mount or make a device there (the class of runc's CVE-2021-30465).
//!
//! Each path is opened with openat2(2) and `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS` relative
//! to a descriptor of the root; what needs to be created is created relative to the descriptor
//! of its resolved parent directory (mkdirat, mknodat, symlinkat), and mounts are made onto
//! `/proc/self/fd/N` of a descriptor opened that way ([`ProcFd`]).
//!
//! Where the kernel lacks openat2 (before Linux 5.6, or a seccomp filter answering ENOSYS), the
//! same resolution is done one component at a time ([`walk`]): each opened with `O_PATH |
//! O_NOFOLLOW` relative to the directory before it, a symbolic link read and its target
//! resolved again from the root (absolute) or from that directory (relative), `..` going back
//! to the directory before, never above the root. Magic links (`/proc/self/fd/N`) are read as
//! text there and resolved inside the root as well, never jumped through.
//!
//! Everything here runs in the pre-exec hook too: no allocation (fixed buffers on the stack of
//! `PATH_MAX` bytes and a bounded stack of directory descriptors), errors as raw errno values.

use crate::error::errno;
use crate::sys;
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{Mode, fstat, mkdirat};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// The longest path (with its NUL) the kernel resolves.
const PATH_MAX: usize = libc::PATH_MAX as usize;
/// The longest name of one component (with its NUL).
const NAME_MAX: usize = 256;
/// Symbolic links followed in one resolution before it fails with ELOOP (the kernel's limit).
const MAX_LINKS: usize = 40;
/// Directories deep a component-by-component resolution goes (ENAMETOOLONG beyond).
const MAX_DEPTH: usize = 128;
/// Tries of openat2 when it reports a concurrent rename or mount (EAGAIN).
const EAGAIN_TRIES: usize = 32;

fn os(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// `bytes` with a NUL after them in `buf` (`.` for no bytes).
pub(crate) fn to_cstr<'a>(bytes: &[u8], buf: &'a mut [u8]) -> io::Result<&'a CStr> {
    let bytes: &[u8] = if bytes.is_empty() { b"." } else { bytes };
    if bytes.len() >= buf.len() {
        return Err(os(libc::ENAMETOOLONG));
    }
    buf[..bytes.len()].copy_from_slice(bytes);
    buf[bytes.len()] = 0;
    CStr::from_bytes_with_nul(&buf[..=bytes.len()]).map_err(|_| os(libc::EINVAL))
}

/// The parent of `path` and its last component (trailing slashes ignored). A path without a
/// last component (`/`, empty) gives an empty name.
pub(crate) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    let mut end = path.len();
    while end > 0 && path[end - 1] == b'/' {
        end -= 1;
    }
    let trimmed = &path[..end];
    match trimmed.iter().rposition(|b| *b == b'/') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (&[], trimmed),
    }
}

/// The components of `path`, without empty ones and `.`, with the index just past each.
fn components(path: &[u8]) -> impl Iterator<Item = (&[u8], usize)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        loop {
            while start < path.len() && path[start] == b'/' {
                start += 1;
            }
            if start >= path.len() {
                return None;
            }
            let begin = start;
            while start < path.len() && path[start] != b'/' {
                start += 1;
            }
            let c = &path[begin..start];
            if c != b"." {
                return Some((c, start));
            }
        }
    })
}

/// Open `path` (a path in the container: absolute, or relative to its root) inside `root`,
/// following symbolic links inside it, with `flags` (`O_CLOEXEC` is added; no `O_CREAT`).
pub(crate) fn open(root: BorrowedFd<'_>, path: &[u8], flags: OFlag) -> io::Result<OwnedFd> {
    let flags = (flags | OFlag::O_CLOEXEC) - OFlag::O_CREAT;
    let mut buf = [0u8; PATH_MAX];
    let c = to_cstr(path, &mut buf)?;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    for _ in 0..EAGAIN_TRIES {
        match openat2(root, c, how) {
            Ok(fd) => return Ok(fd),
            Err(Errno::EAGAIN) => continue,
            // No openat2 here: the same resolution, one component at a time.
            Err(Errno::ENOSYS) => return walk(root, path, flags),
            Err(e) => return Err(errno(e)),
        }
    }
    Err(os(libc::EAGAIN))
}

/// The directory at the top of the stack, or the root.
fn top<'a>(root: BorrowedFd<'a>, stack: &'a [Option<OwnedFd>]) -> BorrowedFd<'a> {
    stack
        .last()
        .and_then(Option::as_ref)
        .map_or(root, AsFd::as_fd)
}

/// [`open`] without openat2: resolve `path` inside `root` one component at a time.
pub(crate) fn walk(root: BorrowedFd<'_>, path: &[u8], flags: OFlag) -> io::Result<OwnedFd> {
    let flags = (flags | OFlag::O_CLOEXEC) - OFlag::O_CREAT;
    // What is left to resolve, in work[pos..len].
    let mut work = [0u8; PATH_MAX];
    if path.len() >= PATH_MAX {
        return Err(os(libc::ENAMETOOLONG));
    }
    work[..path.len()].copy_from_slice(path);
    let (mut pos, mut len) = (0, path.len());
    let mut stack: [Option<OwnedFd>; MAX_DEPTH] = [const { None }; MAX_DEPTH];
    let mut depth = 0;
    let mut links = 0;
    let mut name_buf = [0u8; NAME_MAX];
    loop {
        while pos < len && work[pos] == b'/' {
            pos += 1;
        }
        let dir = top(root, &stack[..depth]);
        if pos == len {
            // The end of the path: the directory reached is what was asked for.
            return openat(dir, c".", flags, Mode::empty()).map_err(errno);
        }
        let start = pos;
        while pos < len && work[pos] != b'/' {
            pos += 1;
        }
        let last = work[pos..len].iter().all(|b| *b == b'/');
        match &work[start..pos] {
            b"." => continue,
            b".." => {
                // Back to the directory before; at the root, the root.
                if depth > 0 {
                    depth -= 1;
                    stack[depth] = None;
                }
                continue;
            }
            _ => {}
        }
        let name = to_cstr(&work[start..pos], &mut name_buf)?;
        let fd = openat(
            dir,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let st = fstat(&fd).map_err(errno)?;
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFLNK {
            links += 1;
            if links > MAX_LINKS {
                return Err(os(libc::ELOOP));
            }
            // The link's target followed by what was left after it.
            let mut target = [0u8; PATH_MAX];
            let n = sys::read_link(fd.as_fd(), &mut target)?;
            if n == 0 {
                return Err(os(libc::ENOENT));
            }
            let rest = &work[pos..len];
            if n + rest.len() >= PATH_MAX {
                return Err(os(libc::ENAMETOOLONG));
            }
            target[n..n + rest.len()].copy_from_slice(rest);
            len = n + rest.len();
            work[..len].copy_from_slice(&target[..len]);
            pos = 0;
            if work[0] == b'/' {
                // An absolute link starts again at the root.
                for slot in &mut stack[..depth] {
                    *slot = None;
                }
                depth = 0;
            }
            continue;
        }
        if last {
            if flags.contains(OFlag::O_PATH) {
                if flags.contains(OFlag::O_DIRECTORY) && kind != libc::S_IFDIR {
                    return Err(os(libc::ENOTDIR));
                }
                return Ok(fd);
            }
            // Opened for real now; it must still be what was resolved.
            let real =
                openat(dir, name, flags | OFlag::O_NOFOLLOW, Mode::empty()).map_err(errno)?;
            let again = fstat(&real).map_err(errno)?;
            if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
                return Err(os(libc::EAGAIN));
            }
            return Ok(real);
        }
        if kind != libc::S_IFDIR {
            return Err(os(libc::ENOTDIR));
        }
        if depth == MAX_DEPTH {
            return Err(os(libc::ENAMETOOLONG));
        }
        stack[depth] = Some(fd);
        depth += 1;
    }
}

/// Told about what [`make_dirs`] and [`create`] create, so that it can be removed again.
pub(crate) trait Record {
    /// An entry is about to be created in `dir` (an `O_PATH` descriptor of the directory).
    fn creating(&mut self, dir: BorrowedFd<'_>);
    /// `name` was created in `dir`.
    fn created(&mut self, dir: BorrowedFd<'_>, name: &CStr);
}

/// Nothing recorded (the pre-exec hook: what it creates is part of the container's run).
impl Record for () {
    fn creating(&mut self, _: BorrowedFd<'_>) {}
    fn created(&mut self, _: BorrowedFd<'_>, _: &CStr) {}
}

/// Open the directory `path` inside `root` (`O_PATH`), creating the directories missing on the
/// way (mode 0755 less the umask), each resolved inside the root before the next. A symbolic
/// link that leads to nothing inside the root is ENOENT: nothing is created through it.
pub(crate) fn make_dirs(
    root: BorrowedFd<'_>,
    path: &[u8],
    record: &mut dyn Record,
) -> io::Result<OwnedFd> {
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let mut current: Option<OwnedFd> = None;
    let mut name_buf = [0u8; NAME_MAX];
    for (component, end) in components(path) {
        let prefix = &path[..end];
        match open(root, prefix, dir_flags) {
            Ok(fd) => current = Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                if component == b".." {
                    return Err(e);
                }
                let parent = current.as_ref().map_or(root, AsFd::as_fd);
                let name = to_cstr(component, &mut name_buf)?;
                record.creating(parent);
                match mkdirat(parent, name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) => record.created(parent, name),
                    // Made at the same time by another container on this root, or a
                    // dangling symbolic link: the open below tells which.
                    Err(Errno::EEXIST) => {}
                    Err(e) => return Err(errno(e)),
                }
                current = Some(open(root, prefix, dir_flags)?);
            }
            Err(e) => return Err(e),
        }
    }
    match current {
        Some(fd) => Ok(fd),
        None => open(root, b"/", dir_flags),
    }
}

/// What [`create`] makes when the path is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A directory.
    Dir,
    /// An empty regular file with these permissions (less the umask).
    File(libc::mode_t),
}

/// Make sure something is at `path` inside `root`: its missing parent directories are
/// created ([`make_dirs`]), then the last component as `kind` when nothing resolves there
/// (what exists, whatever its type, is left). A dangling symbolic link is ENOENT.
pub(crate) fn create(
    root: BorrowedFd<'_>,
    path: &[u8],
    kind: Kind,
    record: &mut dyn Record,
) -> io::Result<()> {
    let (parent_path, name) = split(path);
    if name.is_empty() || name == b"." || name == b".." {
        // The root itself, or a directory that exists once resolved.
        return open(root, path, OFlag::O_PATH).map(drop);
    }
    match open(root, path, OFlag::O_PATH) {
        Ok(_) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let parent = make_dirs(root, parent_path, record)?;
    let mut name_buf = [0u8; NAME_MAX];
    let cname = to_cstr(name, &mut name_buf)?;
    record.creating(parent.as_fd());
    let made = match kind {
        Kind::Dir => mkdirat(&parent, cname, Mode::from_bits_truncate(0o755)),
        Kind::File(mode) => openat(
            &parent,
            cname,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map(drop),
    };
    match made {
        Ok(()) => {
            record.created(parent.as_fd(), cname);
            Ok(())
        }
        // Made by someone else meanwhile, or a dangling symbolic link: resolved, or ENOENT.
        Err(Errno::EEXIST) => open(root, path, OFlag::O_PATH).map(drop),
        Err(e) => Err(errno(e)),
    }
}

/// `/proc/self/fd/N` for a descriptor, formatted without allocation: a path through which
/// mount(2) and friends reach exactly what was opened, wherever the name now leads.
pub(crate) struct ProcFd {
    buf: [u8; 32],
}

impl ProcFd {
    /// The path of `fd`.
    pub(crate) fn new(fd: BorrowedFd<'_>) -> ProcFd {
        const PREFIX: &[u8] = b"/proc/self/fd/";
        let mut buf = [0u8; 32];
        buf[..PREFIX.len()].copy_from_slice(PREFIX);
        let mut digits = [0u8; 10];
        let mut n = fd.as_raw_fd().unsigned_abs();
        let mut count = 0;
        loop {
            // A decimal digit: the truncation cannot lose anything.
            #[allow(clippy::cast_possible_truncation)]
            let digit = (n % 10) as u8;
            digits[count] = b'0' + digit;
            count += 1;
            n /= 10;
            if n == 0 || count == digits.len() {
                break;
            }
        }
        for (i, d) in digits[..count].iter().rev().enumerate() {
            buf[PREFIX.len() + i] = *d;
        }
        ProcFd { buf }
    }

    /// The path, NUL-terminated.
    pub(crate) fn as_cstr(&self) -> &CStr {
        CStr::from_bytes_until_nul(&self.buf).unwrap_or(c"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, symlink};
    use std::path::Path;

    fn root_fd(dir: &Path) -> OwnedFd {
        nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).expect("open root")
    }

    fn id(fd: &OwnedFd) -> (u64, u64) {
        let st = fstat(fd).expect("fstat");
        (st.st_dev, st.st_ino)
    }

    fn id_of(p: &Path) -> (u64, u64) {
        let m = fs::metadata(p).expect("metadata");
        (m.dev(), m.ino())
    }

    /// root/ with a/b/c, file f, links out (absolute), up (../../..), loop, self-referring
    /// chains; and a sibling directory outside the root.
    fn tree() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs::create_dir_all(root.join("a/b/c")).expect("mkdir");
        fs::create_dir_all(&outside).expect("mkdir");
        fs::create_dir_all(root.join(outside.strip_prefix("/").expect("absolute"))).expect("in");
        fs::write(root.join("f"), b"x").expect("file");
        symlink(&outside, root.join("abs")).expect("link");
        symlink("../../outside", root.join("rel")).expect("link");
        symlink("../../../../../..", root.join("a/b/up")).expect("link");
        symlink("/a/b", root.join("ab")).expect("link");
        symlink("c/../../b/c", root.join("a/b/cc")).expect("link");
        symlink("loop", root.join("loop")).expect("link");
        symlink("/nowhere/x", root.join("dangling")).expect("link");
        (dir, root, outside)
    }

    type Opener = fn(BorrowedFd<'_>, &[u8], OFlag) -> io::Result<OwnedFd>;

    fn check_resolution(resolve: Opener) {
        let (_dir, root, outside) = tree();
        let fd = root_fd(&root);
        let r = |p: &str| resolve(fd.as_fd(), p.as_bytes(), OFlag::O_PATH);
        let same = |p: &str, expected: &Path| {
            let got = r(p).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert_eq!(id(&got), id_of(expected), "{p}");
        };
        same("/", &root);
        same("", &root);
        same("a/b/c", &root.join("a/b/c"));
        same("/a//b/./c/", &root.join("a/b/c"));
        // An absolute link to a host directory lands on the same path inside the root.
        same(
            "/abs",
            &root.join(outside.strip_prefix("/").expect("absolute")),
        );
        // A relative link climbing out stops at the root.
        assert_eq!(
            r("/rel").map(drop).map_err(|e| e.raw_os_error()),
            Err(Some(libc::ENOENT))
        );
        same("/a/b/up", &root);
        same("/a/b/up/a", &root.join("a"));
        same("/../../..", &root);
        same("/ab/c", &root.join("a/b/c"));
        same("/a/b/cc", &root.join("a/b/c"));
        same("/f", &root.join("f"));
        assert_eq!(
            r("/loop").map(drop).map_err(|e| e.raw_os_error()),
            Err(Some(libc::ELOOP))
        );
        assert_eq!(
            r("/dangling").map(drop).map_err(|e| e.raw_os_error()),
            Err(Some(libc::ENOENT))
        );
        assert_eq!(
            resolve(fd.as_fd(), b"/f", OFlag::O_PATH | OFlag::O_DIRECTORY)
                .map(drop)
                .map_err(|e| e.raw_os_error()),
            Err(Some(libc::ENOTDIR))
        );
        assert_eq!(
            r("/f/x").map(drop).map_err(|e| e.raw_os_error()),
            Err(Some(libc::ENOTDIR))
        );
        // Opened for reading: the file's content.
        let file = resolve(fd.as_fd(), b"/a/b/up/f", OFlag::O_RDONLY).expect("open f");
        assert_eq!(
            fs::read_to_string(format!("/proc/self/fd/{}", file.as_raw_fd())).ok(),
            Some("x".into())
        );
    }

    #[test]
    fn openat2_resolves_inside_the_root() {
        check_resolution(open);
    }

    #[test]
    fn the_walk_resolves_as_openat2_does() {
        check_resolution(walk);
    }

    #[test]
    fn where_openat2_answers_enosys_the_walk_takes_over() {
        // A thread of its own, under a filter that answers ENOSYS to openat2 (as an old
        // kernel, or Docker's profile on an old runtime, does); the filter ends with it.
        let (dir, root, outside) = tree();
        let joined = std::thread::spawn(move || {
            let filter: seccompiler::BpfProgram = seccompiler::SeccompFilter::new(
                [(libc::SYS_openat2, vec![])].into_iter().collect(),
                seccompiler::SeccompAction::Allow,
                seccompiler::SeccompAction::Errno(libc::ENOSYS.unsigned_abs()),
                std::env::consts::ARCH.try_into().expect("architecture"),
            )
            .and_then(TryInto::try_into)
            .expect("filter");
            seccompiler::apply_filter(&filter).expect("install the filter");
            let fd = root_fd(&root);
            let how = OpenHow::new().flags(OFlag::O_PATH);
            assert_eq!(openat2(fd.as_fd(), c"a", how).err(), Some(Errno::ENOSYS));
            let got = open(fd.as_fd(), b"/abs", OFlag::O_PATH).expect("through the walk");
            let inside = root.join(outside.strip_prefix("/").expect("absolute"));
            assert_eq!(id(&got), id_of(&inside));
            let mut made = Made::default();
            create(fd.as_fd(), b"/abs/x/y", Kind::Dir, &mut made).expect("create");
            assert_eq!(made.0, ["x", "y"]);
            assert!(inside.join("x/y").is_dir());
            let e = create(fd.as_fd(), b"/rel/z", Kind::Dir, &mut ()).expect_err("dangling");
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
            assert_eq!(fs::read_dir(&outside).expect("outside").count(), 0);
        })
        .join();
        drop(dir);
        if let Err(panic) = joined {
            std::panic::resume_unwind(panic);
        }
    }

    #[test]
    fn magic_links_are_refused_or_read_as_text() {
        // With the host's root as the root, /proc/self/fd/N is a magic link: openat2 refuses
        // to jump through it; the walk reads its text and resolves that, which for a
        // directory is the same directory and for a pipe is nothing.
        let dir = tempfile::tempdir().expect("tempdir");
        let host = root_fd(Path::new("/"));
        let target = root_fd(dir.path());
        let magic = format!("/proc/self/fd/{}", target.as_raw_fd());
        let e = open(host.as_fd(), magic.as_bytes(), OFlag::O_PATH).expect_err("magic link");
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        let walked = walk(host.as_fd(), magic.as_bytes(), OFlag::O_PATH).expect("as text");
        assert_eq!(id(&walked), id_of(dir.path()));
        let (read, _write) = nix::unistd::pipe().expect("pipe");
        let pipe = format!("/proc/self/fd/{}", read.as_raw_fd());
        let e = walk(host.as_fd(), pipe.as_bytes(), OFlag::O_PATH).expect_err("pipe:[N]");
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }

    #[derive(Default)]
    struct Made(Vec<String>, usize);

    impl Record for Made {
        fn creating(&mut self, _: BorrowedFd<'_>) {
            self.1 += 1;
        }
        fn created(&mut self, _: BorrowedFd<'_>, name: &CStr) {
            self.0.push(name.to_string_lossy().into_owned());
        }
    }

    #[test]
    fn creation_follows_links_inside_the_root_and_never_outside() {
        let (_dir, root, outside) = tree();
        let fd = root_fd(&root);
        let mut made = Made::default();
        create(fd.as_fd(), b"/abs/x/y", Kind::Dir, &mut made).expect("create");
        create(fd.as_fd(), b"/ab/new/file", Kind::File(0o600), &mut made).expect("create");
        create(fd.as_fd(), b"/a/b", Kind::Dir, &mut made).expect("exists");
        create(fd.as_fd(), b"/f", Kind::Dir, &mut made).expect("exists, a file");
        assert_eq!(made.0, ["x", "y", "new", "file"]);
        assert_eq!(made.1, 4);
        let inside = root.join(outside.strip_prefix("/").expect("absolute"));
        assert!(inside.join("x/y").is_dir());
        let m = fs::metadata(root.join("a/b/new/file")).expect("file");
        assert!(m.is_file());
        assert_eq!(fs::read_dir(&outside).expect("outside").count(), 0);
        // Through a link climbing out, or a dangling one: refused, nothing made anywhere.
        for path in ["/rel/x", "/dangling/x", "/dangling", "/a/b/up/../rel/z"] {
            let e = create(fd.as_fd(), path.as_bytes(), Kind::Dir, &mut ()).expect_err(path);
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{path}");
        }
        assert_eq!(fs::read_dir(&outside).expect("outside").count(), 0);
        assert!(!root.join("outside").exists() && !root.join("nowhere").exists());
        let e = create(fd.as_fd(), b"/f/x", Kind::Dir, &mut ()).expect_err("under a file");
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
    }

    #[test]
    fn split_and_components() {
        assert_eq!(split(b"/a/b/c"), (&b"/a/b"[..], &b"c"[..]));
        assert_eq!(split(b"/a/b//"), (&b"/a"[..], &b"b"[..]));
        assert_eq!(split(b"/a"), (&b""[..], &b"a"[..]));
        assert_eq!(split(b"a"), (&b""[..], &b"a"[..]));
        assert_eq!(split(b"/"), (&b""[..], &b""[..]));
        let c: Vec<_> = components(b"//a/./b/../c/").collect();
        assert_eq!(
            c,
            [
                (&b"a"[..], 3),
                (&b"b"[..], 7),
                (&b".."[..], 10),
                (&b"c"[..], 12)
            ]
        );
    }

    #[test]
    fn proc_fd_paths() {
        let fd = root_fd(Path::new("/"));
        let p = ProcFd::new(fd.as_fd());
        assert_eq!(
            p.as_cstr().to_str().expect("utf-8"),
            format!("/proc/self/fd/{}", fd.as_raw_fd())
        );
    }

    #[test]
    fn long_paths_are_refused_not_cut() {
        let (_dir, root, _outside) = tree();
        let fd = root_fd(&root);
        let long = vec![b'a'; PATH_MAX + 1];
        for resolve in [open as Opener, walk] {
            let e = resolve(fd.as_fd(), &long, OFlag::O_PATH).expect_err("too long");
            assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG));
        }
        let e = walk(fd.as_fd(), &[b'n'; 300], OFlag::O_PATH).expect_err("long name");
        assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG));
    }
}
