//! Flattening across 1, 2 and 3 layers with whiteouts and opaque directories: the entries, their
//! order and metadata, read from the layers and replayed from saved indexes, which must give
//! the same result while reading each layer once.

use crate::entry::{Entry, Kind};
use crate::layers::{Flattener, LayerError, Layers};
use proptest::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Read;

/// Layers held in memory, counting how often each is opened, keeping saved indexes.
struct MemLayers {
    tars: Vec<Vec<u8>>,
    opened: Vec<Cell<usize>>,
    saved: RefCell<HashMap<usize, Vec<u8>>>,
    keep: bool,
}

impl MemLayers {
    fn new(tars: Vec<Vec<u8>>, keep: bool) -> Self {
        let opened = tars.iter().map(|_| Cell::new(0)).collect();
        MemLayers {
            tars,
            opened,
            saved: RefCell::default(),
            keep,
        }
    }

    fn reads(&self) -> Vec<usize> {
        self.opened.iter().map(Cell::get).collect()
    }
}

impl Layers for MemLayers {
    fn image(&self) -> &str {
        "test/flatten:1"
    }
    fn count(&self) -> usize {
        self.tars.len()
    }
    fn digest(&self, index: usize) -> String {
        format!("layer{index}")
    }
    fn open(&self, index: usize) -> std::io::Result<Box<dyn Read + Send + '_>> {
        self.opened[index].set(self.opened[index].get() + 1);
        Ok(Box::new(&self.tars[index][..]))
    }
    fn load_index(&self, index: usize) -> Option<Vec<u8>> {
        self.saved.borrow().get(&index).cloned()
    }
    fn save_index(&self, index: usize, data: &[u8]) {
        if self.keep {
            self.saved.borrow_mut().insert(index, data.to_vec());
        }
    }
}

/// One member of a test layer.
#[derive(Debug, Clone)]
enum M {
    Dir(&'static str, u32, u64),
    File(&'static str, &'static str),
    Link(&'static str, &'static str),
    Hard(&'static str, &'static str),
    /// `.wh.NAME` beside `path`'s base name.
    Whiteout(&'static str),
    /// `DIR/.wh..wh..opq`.
    Opaque(&'static str),
    /// A named pipe.
    Fifo(&'static str),
    /// A directory with the extended attribute `user.k` (a PAX record).
    DirX(&'static str, &'static str),
}

fn tar(members: &[M]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(1);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        let (path, data): (String, &[u8]) = match m {
            M::Dir(p, mode, mtime) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_mtime(*mtime);
                (format!("{p}/"), b"")
            }
            M::File(p, content) => {
                h.set_size(content.len() as u64);
                (p.to_string(), content.as_bytes())
            }
            M::Link(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                set_field(&mut h, 157, target);
                (p.to_string(), b"")
            }
            M::Hard(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                set_field(&mut h, 157, target);
                (p.to_string(), b"")
            }
            M::Whiteout(p) => (
                match p.rsplit_once('/') {
                    Some((dir, base)) => format!("{dir}/.wh.{base}"),
                    None => format!(".wh.{p}"),
                },
                b"",
            ),
            M::Opaque(dir) => (format!("{dir}/.wh..wh..opq"), b""),
            M::Fifo(p) => {
                h.set_entry_type(tar::EntryType::Fifo);
                (p.to_string(), b"")
            }
            M::DirX(p, value) => {
                let record = format!(" SCHILY.xattr.user.k={value}\n");
                let mut len = record.len() + 2;
                if format!("{len}").len() > 2 {
                    len += 1;
                }
                let pax = format!("{len}{record}");
                let mut x = tar::Header::new_ustar();
                x.set_entry_type(tar::EntryType::XHeader);
                x.set_size(pax.len() as u64);
                x.set_mode(0o644);
                x.set_mtime(0);
                x.set_uid(0);
                x.set_gid(0);
                set_field(&mut x, 0, "PaxHeader");
                x.set_cksum();
                b.append(&x, pax.as_bytes()).expect("append");
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (format!("{p}/"), b"")
            }
        };
        set_field(&mut h, 0, &path);
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("tar")
}

/// Write `value` into the 100-byte header field at `offset` (the name or the link name) as it
/// is, so that layers may hold the hostile paths the tar crate would refuse to write.
fn set_field(h: &mut tar::Header, offset: usize, value: &str) {
    let field = &mut h.as_mut_bytes()[offset..offset + 100];
    field.fill(0);
    field[..value.len()].copy_from_slice(value.as_bytes());
}

/// Each entry as `path kind mode mtime [data]`, in order, or the error.
fn flatten(layers: &MemLayers) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    Flattener::new(layers)
        .run(&mut |e: &Entry, data: &mut dyn Read| {
            let mut buf = String::new();
            data.read_to_string(&mut buf)
                .map_err(|source| LayerError::Read {
                    image: "test".into(),
                    layer: "data".into(),
                    source,
                })?;
            out.push(describe(e, &buf));
            Ok::<(), LayerError>(())
        })
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn describe(e: &Entry, data: &str) -> String {
    let kind = match &e.kind {
        Kind::File => format!("file {data:?}"),
        Kind::Dir => "dir".into(),
        Kind::Symlink(t) => format!("-> {t}"),
        Kind::Hardlink(t) => format!("=> {t}"),
        other => format!("{other:?}"),
    };
    let xattrs: Vec<String> = e
        .xattrs
        .iter()
        .map(|(k, v)| format!(" {k}={}", String::from_utf8_lossy(v)))
        .collect();
    format!(
        "{} {kind} {:o} {}{}",
        e.path,
        e.mode,
        e.mtime,
        xattrs.concat()
    )
}

/// Flatten `layers` three ways and check they agree: without saved indexes (each layer read
/// twice), saving them, and from them (each layer read once). Returns the result.
fn flatten_all_ways(layers: &[Vec<M>]) -> Result<Vec<String>, String> {
    let tars: Vec<Vec<u8>> = layers.iter().map(|l| tar(l)).collect();
    let plain = MemLayers::new(tars.clone(), false);
    let want = flatten(&plain);
    let saving = MemLayers::new(tars, true);
    assert_eq!(flatten(&saving), want, "saving the indexes");
    if want.is_ok() {
        assert_eq!(
            plain.reads(),
            vec![2; layers.len()],
            "read twice without an index"
        );
        assert_eq!(
            saving.saved.borrow().len(),
            layers.len(),
            "every index saved"
        );
    }
    saving.opened.iter().for_each(|c| c.set(0));
    let replayed = flatten(&saving);
    assert_eq!(replayed, want, "from the saved indexes");
    if want.is_ok() {
        assert_eq!(
            saving.reads(),
            vec![1; layers.len()],
            "read once from an index"
        );
    }
    want
}

fn lines(s: &[&str]) -> Result<Vec<String>, String> {
    Ok(s.iter().map(|l| l.to_string()).collect())
}

#[test]
fn one_layer() {
    let got = flatten_all_ways(&[vec![
        M::File("etc/a", "a"),
        M::Dir("etc", 0o700, 5),
        M::File("etc/b", "old"),
        M::Link("lnk", "etc/a"),
        M::Hard("etc/c", "etc/a"),
        M::File("etc/b", "new"),
    ]]);
    // `etc` comes before its first child, with the metadata of its later entry; the duplicate
    // `etc/b` appears once, at the position and with the content of its last member.
    assert_eq!(
        got,
        lines(&[
            "etc dir 700 5",
            "etc/a file \"a\" 644 1",
            "lnk -> etc/a 644 1",
            "etc/c => etc/a 644 1",
            "etc/b file \"new\" 644 1",
        ])
    );
}

#[test]
fn two_layers() {
    let got = flatten_all_ways(&[
        vec![
            M::Dir("a", 0o755, 1),
            M::File("a/gone", "x"),
            M::File("a/kept", "k"),
            M::Dir("b", 0o755, 1),
            M::File("b/old", "o"),
            M::Dir("c", 0o755, 1),
            M::File("c/f", "f"),
            M::File("d", "file"),
        ],
        vec![
            M::Whiteout("a/gone"),
            M::Opaque("b"),
            M::File("b/new", "n"),
            M::File("c", "now a file"),
            M::Dir("d", 0o750, 2),
            M::File("d/f", "in dir"),
        ],
    ]);
    assert_eq!(
        got,
        lines(&[
            "a dir 755 1",
            "a/kept file \"k\" 644 1",
            "b dir 755 1",
            "d dir 750 2",
            "b/new file \"n\" 644 1",
            "c file \"now a file\" 644 1",
            "d/f file \"in dir\" 644 1",
        ])
    );
}

#[test]
fn three_layers() {
    let got = flatten_all_ways(&[
        vec![
            M::Dir("etc", 0o755, 1),
            M::File("etc/conf", "v0"),
            M::Dir("var", 0o755, 1),
            M::File("var/log", "l0"),
            M::File("keep", "k"),
        ],
        vec![
            M::Whiteout("etc/conf"),
            M::File("var/log2", "l1"),
            M::Whiteout("keep"),
        ],
        vec![
            M::File("etc/conf", "v2"),
            M::Dir("var", 0o700, 3),
            M::Opaque("var"),
            M::File("var/new", "n2"),
            M::File("keep", "back"),
        ],
    ]);
    // `var` keeps its first position with the top layer's metadata; its opaque marker hides both
    // lower layers' files; `etc/conf` and `keep` come back from the top layer.
    assert_eq!(
        got,
        lines(&[
            "etc dir 755 1",
            "var dir 700 3",
            "etc/conf file \"v2\" 644 1",
            "var/new file \"n2\" 644 1",
            "keep file \"back\" 644 1",
        ])
    );
}

#[test]
fn metadata_of_directories_survives_the_index() {
    let got = flatten_all_ways(&[
        vec![M::DirX("d", "low"), M::Fifo("d/p")],
        vec![M::DirX("d", "high"), M::File("d/f", "f")],
    ]);
    assert_eq!(
        got,
        lines(&[
            "d dir 755 1 user.k=high",
            "d/p Fifo 644 1",
            "d/f file \"f\" 644 1",
        ])
    );
}

#[test]
fn whiteout_of_a_whole_tree() {
    let got = flatten_all_ways(&[
        vec![
            M::Dir("x", 0o755, 1),
            M::Dir("x/y", 0o755, 1),
            M::File("x/y/z", "z"),
        ],
        vec![M::File("w", "w")],
        vec![M::Whiteout("x")],
    ]);
    assert_eq!(got, lines(&["w file \"w\" 644 1"]));
}

#[test]
fn hostile_layer_is_refused_from_an_index_too() {
    // Each layer alone is fine (and its index is saved); together the upper one writes
    // through the lower one's symlink, which replaying the index must refuse as reading does.
    let lower = vec![M::Link("s", "/etc")];
    let upper = vec![M::File("s/passwd", "x")];
    let got = flatten_all_ways(&[lower.clone(), upper.clone()]);
    let err = got.expect_err("refused");
    assert!(err.contains("beneath the symlink `s`"), "{err}");
    // The indexes saved from other images holding the same layers are replayed, and refused.
    let keep = MemLayers::new(vec![tar(&lower)], true);
    flatten(&keep).expect("lower alone");
    let top = MemLayers::new(vec![tar(&upper)], true);
    flatten(&top).expect("upper alone");
    let both = MemLayers::new(vec![tar(&lower), tar(&upper)], false);
    both.saved
        .borrow_mut()
        .insert(0, keep.saved.borrow()[&0].clone());
    both.saved
        .borrow_mut()
        .insert(1, top.saved.borrow()[&0].clone());
    assert_eq!(flatten(&both), Err(err));
}

#[test]
fn damaged_index_is_ignored() {
    let layers = MemLayers::new(vec![tar(&[M::File("f", "data")])], true);
    let want = flatten(&layers);
    let mut saved = layers.saved.borrow()[&0].clone();
    let middle = saved.len() / 2;
    saved[middle] ^= 0x55;
    layers.saved.borrow_mut().insert(0, saved);
    layers.opened[0].set(0);
    assert_eq!(flatten(&layers), want);
    assert_eq!(layers.reads(), vec![2], "read again, index recorded anew");
}

/// Paths for generated layers: nested ones, a special whiteout name, a path that climbs, the root.
const PATHS: [&str; 9] = [
    "a",
    "a/b",
    "a/b/c",
    "a/d",
    "e",
    "e/f",
    "a/.wh..wh.plnk",
    "/a/../e",
    "./",
];

fn member() -> impl Strategy<Value = M> {
    let path = prop::sample::select(PATHS.to_vec());
    prop_oneof![
        (
            path.clone(),
            prop::sample::select(vec![0o755u32, 0o700]),
            0u64..3
        )
            .prop_map(|(p, mode, t)| M::Dir(p, mode, t)),
        (path.clone(), prop::sample::select(vec!["x", "yy"])).prop_map(|(p, c)| M::File(p, c)),
        (path.clone(), prop::sample::select(PATHS.to_vec())).prop_map(|(p, t)| M::Link(p, t)),
        (path.clone(), prop::sample::select(PATHS.to_vec())).prop_map(|(p, t)| M::Hard(p, t)),
        path.clone().prop_map(M::Whiteout),
        path.clone().prop_map(M::Opaque),
        path.clone().prop_map(M::Fifo),
        (path, prop::sample::select(vec!["1", "2"])).prop_map(|(p, v)| M::DirX(p, v)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any 1 to 3 layers (duplicates, whiteouts, opaque markers, links, hostile combinations):
    /// replaying saved indexes gives exactly what reading the layers gives, reading each once.
    #[test]
    fn indexes_change_nothing(layers in prop::collection::vec(prop::collection::vec(member(), 0..12), 1..4)) {
        flatten_all_ways(&layers).ok();
    }
}
