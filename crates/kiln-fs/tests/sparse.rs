//! Sparse files in layers, as GNU tar writes them: a GNU sparse member (`tar --sparse`, GNU
//! format) is flattened and unpacked as the regular file it stands for, holes and all, with its
//! real size (up to a limit, beyond which it is refused by name); a PAX-format sparse member is
//! refused by name rather than written as its sparse map.

use kiln_fs::{Entry, Flattener, Kind, LayerError, Layers};
use std::io::Read;
use std::path::Path;
use std::process::Command;

/// One uncompressed layer held in memory.
struct OneLayer(Vec<u8>);

impl Layers for OneLayer {
    fn image(&self) -> &str {
        "test/sparse:1"
    }
    fn count(&self) -> usize {
        1
    }
    fn digest(&self, _: usize) -> String {
        "layer0".into()
    }
    fn open(&self, _: usize) -> std::io::Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(&self.0[..]))
    }
}

const SIZE: u64 = 3 << 20;

/// `dir/f`: `head` at 0, `tail` at 2 MiB, and a hole up to 3 MiB; returns its contents.
fn sparse_file(dir: &Path) -> Vec<u8> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::create(dir.join("f")).expect("create");
    f.write_all(b"head").expect("write");
    f.seek(SeekFrom::Start(2 << 20)).expect("seek");
    f.write_all(b"tail").expect("write");
    f.set_len(SIZE).expect("truncate");
    let mut want = vec![0u8; usize::try_from(SIZE).expect("size")];
    want[..4].copy_from_slice(b"head");
    want[2 << 20..(2 << 20) + 4].copy_from_slice(b"tail");
    want
}

/// GNU tar of `dir/f` with `--sparse` in `format`, or `None` (with a reason) without GNU tar.
fn gnu_tar(dir: &Path, format: &str) -> Option<Vec<u8>> {
    let out = dir.join(format!("{format}.tar"));
    let status = Command::new("tar")
        .arg("--sparse")
        .arg(format!("--format={format}"))
        .arg("-cf")
        .arg(&out)
        .arg("-C")
        .arg(dir)
        .arg("f")
        .status();
    match status {
        Ok(s) if s.success() => Some(std::fs::read(&out).expect("read tar")),
        other => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI needs GNU tar: {other:?}"
            );
            eprintln!("skipping: GNU tar failed or is missing: {other:?}");
            None
        }
    }
}

fn flatten(layer: Vec<u8>) -> Result<Vec<(Entry, Vec<u8>)>, LayerError> {
    let layers = OneLayer(layer);
    let mut out = Vec::new();
    Flattener::new(&layers).run(&mut |e: &Entry, data: &mut dyn Read| {
        let mut buf = Vec::new();
        data.read_to_end(&mut buf)
            .map_err(|source| LayerError::Read {
                image: "test".into(),
                layer: "0".into(),
                source,
            })?;
        out.push((e.clone(), buf));
        Ok::<(), LayerError>(())
    })?;
    Ok(out)
}

#[test]
fn gnu_sparse_member_is_the_whole_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let want = sparse_file(tmp.path());
    let Some(layer) = gnu_tar(tmp.path(), "gnu") else {
        return;
    };
    // The member really is a GNU sparse one (type `S`), and smaller than the file it holds.
    assert_eq!(layer[156], b'S', "GNU tar did not write a sparse member");
    assert!((layer.len() as u64) < SIZE / 2, "{} bytes", layer.len());

    let entries = flatten(layer.clone()).expect("flatten");
    let (entry, data) = entries
        .iter()
        .find(|(e, _)| e.path == "f")
        .expect("f is flattened, not dropped");
    assert_eq!(entry.kind, Kind::File);
    assert_eq!(entry.size, SIZE);
    assert!(data == &want, "flattened contents differ");

    let dest = tmp.path().join("root");
    std::fs::create_dir(&dest).expect("mkdir");
    kiln_fs::unpack::unpack(&layer[..], &dest, "layer0").expect("unpack");
    let got = std::fs::read(dest.join("f")).expect("f is unpacked, not dropped");
    assert!(got == want, "unpacked contents differ");
}

#[test]
fn pax_sparse_member_is_refused_by_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    sparse_file(tmp.path());
    let Some(layer) = gnu_tar(tmp.path(), "posix") else {
        return;
    };
    let e = flatten(layer.clone()).expect_err("refused").to_string();
    assert!(
        e.contains("sparse file in the PAX format") && e.contains("the file `f`"),
        "{e}"
    );
    let dest = tmp.path().join("root");
    std::fs::create_dir(&dest).expect("mkdir");
    let e = kiln_fs::unpack::unpack(&layer[..], &dest, "layer0")
        .expect_err("refused")
        .to_string();
    assert!(e.contains("sparse file in the PAX format"), "{e}");
}

#[test]
fn oversized_gnu_sparse_member_is_refused_by_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    let f = std::fs::File::create(tmp.path().join("f")).expect("create");
    // A few bytes of data that stand for more than the limit of zeros.
    f.set_len(kiln_fs::layers::MAX_SPARSE_BYTES + 1)
        .expect("truncate");
    std::os::unix::fs::FileExt::write_at(&f, b"x", 0).expect("write");
    drop(f);
    let Some(layer) = gnu_tar(tmp.path(), "gnu") else {
        return;
    };
    assert_eq!(layer[156], b'S', "GNU tar did not write a sparse member");
    let e = flatten(layer.clone()).expect_err("refused").to_string();
    assert!(
        e.contains("member `f` is a sparse file of 1073741825 bytes"),
        "{e}"
    );
    let dest = tmp.path().join("root");
    std::fs::create_dir(&dest).expect("mkdir");
    let e = kiln_fs::unpack::unpack(&layer[..], &dest, "layer0")
        .expect_err("refused")
        .to_string();
    assert!(e.contains("more than the limit of 1024 MiB"), "{e}");
    assert!(!dest.join("f").exists());
}
