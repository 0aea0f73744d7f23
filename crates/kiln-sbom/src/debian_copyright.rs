//! Debian's machine-readable copyright files (`/usr/share/doc/PACKAGE/copyright` in the
//! copyright-format 1.0 of DEP-5): the licenses their `License` fields name.
//!
//! The first line of a `License` field gives the short names of its licenses, combined with
//! `or`, `and` (which binds tighter, unless a comma precedes the conjunction) and
//! `NAME with KEYWORDS exception`. They are mapped to SPDX license identifiers where Debian's
//! name means exactly one SPDX license (`GPL-2+` is `GPL-2.0-or-later`, `Expat` is `MIT`,
//! `Artistic` is Perl's `Artistic-1.0-Perl`); a name that does not (`public-domain`, an
//! unversioned `GPL`, `GPL-2+ with OpenSSL exception`) is kept as Debian writes it, and the
//! document writers turn it into a `LicenseRef-` of its own.
//!
//! The input comes from images and is untrusted: the parser never panics, reads the first
//! [`MAX_VALUE`](crate::parse::MAX_VALUE) bytes of a field's first line and keeps at most
//! [`MAX_LICENSES`] licenses of one file. The capture bounds the size of the files themselves
//! ([`crate::MAX_COPYRIGHT_FILE_BYTES`]).

use crate::parse::paragraphs;
use std::collections::BTreeSet;

/// The most distinct licenses taken from one copyright file.
pub const MAX_LICENSES: usize = 64;
/// The most words read of one `License` field's first line.
const MAX_WORDS: usize = 128;

/// A license specification: SPDX identifiers and names kept as Debian writes them, combined.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    /// One license: an SPDX identifier (`WITH` an SPDX exception where Debian names one), or a
    /// name with no exact SPDX identifier.
    Term(String),
    /// All of these.
    And(Vec<Expr>),
    /// One of these.
    Or(Vec<Expr>),
}

impl Expr {
    /// The expression as text, SPDX's operators between its parts (`AND` binding tighter than
    /// `OR`, and an `AND` inside an `OR` parenthesised anyway, for the reader).
    fn render(&self) -> String {
        match self {
            Expr::Term(t) => t.clone(),
            Expr::And(parts) => parts
                .iter()
                .map(|p| match p {
                    Expr::Or(_) => format!("({})", p.render()),
                    _ => p.render(),
                })
                .collect::<Vec<_>>()
                .join(" AND "),
            Expr::Or(parts) => parts
                .iter()
                .map(|p| match p {
                    Expr::And(_) => format!("({})", p.render()),
                    _ => p.render(),
                })
                .collect::<Vec<_>>()
                .join(" OR "),
        }
    }

    /// The expression with the operands of each operator sorted: equal for `A OR B` and
    /// `B OR A`.
    fn key(&self) -> String {
        let sorted = |parts: &[Expr], op: &str| {
            let mut keys: Vec<String> = parts.iter().map(|p| format!("({})", p.key())).collect();
            keys.sort();
            keys.join(op)
        };
        match self {
            Expr::Term(t) => t.clone(),
            Expr::And(parts) => sorted(parts, " AND "),
            Expr::Or(parts) => sorted(parts, " OR "),
        }
    }

    /// The parts that must all be complied with: the operands of a top-level `AND`, else the
    /// expression itself.
    fn conjuncts(self) -> Vec<Expr> {
        match self {
            Expr::And(parts) => parts.into_iter().flat_map(Expr::conjuncts).collect(),
            other => vec![other],
        }
    }

    /// Every license it names.
    fn terms<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::Term(t) => out.push(t),
            Expr::And(parts) | Expr::Or(parts) => parts.iter().for_each(|p| p.terms(out)),
        }
    }

    /// `parts` combined with `and` (`or` when `or`), nested operands of the same operator
    /// flattened.
    fn join(or: bool, parts: Vec<Expr>) -> Expr {
        let mut flat = Vec::new();
        for p in parts {
            match (or, p) {
                (false, Expr::And(inner)) | (true, Expr::Or(inner)) => flat.extend(inner),
                (_, p) => flat.push(p),
            }
        }
        if flat.len() == 1 {
            return flat.pop().unwrap_or(Expr::Term(String::new()));
        }
        if or { Expr::Or(flat) } else { Expr::And(flat) }
    }
}

/// Whether the header paragraph's `Format` names copyright-format 1.0, the only version whose
/// short names this module knows the meaning of.
fn is_dep5(header: &[(&str, &str)]) -> bool {
    header.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("Format")
            && v.to_ascii_lowercase()
                .contains("/doc/packaging-manuals/copyright-format/1.0")
    })
}

/// The licenses the copyright file `data` names in the first lines of its `License` fields,
/// as SPDX expressions where the names map exactly (see the module's documentation), distinct,
/// in the order the file first names them. A field's parts joined by `and` count as licenses
/// of their own; a stand-alone License paragraph counts only when it names a license no
/// header or Files paragraph names (it usually gives the text of one that does). Empty when
/// the file is not in copyright-format 1.0.
pub fn licenses(data: &[u8]) -> Vec<String> {
    conjuncts(data).iter().map(Expr::render).collect()
}

/// The license of the package whose copyright file is `data`: its [`licenses`] joined with
/// `AND` (an `OR` among them parenthesised). `None` when the file names none or is not in
/// copyright-format 1.0.
pub fn package_license(data: &[u8]) -> Option<String> {
    let parts = conjuncts(data);
    if parts.is_empty() {
        return None;
    }
    Some(Expr::join(false, parts).render())
}

fn conjuncts(data: &[u8]) -> Vec<Expr> {
    let text = String::from_utf8_lossy(data);
    let all = paragraphs(text.trim_start_matches('\u{feff}'));
    let Some((header, rest)) = all.split_first() else {
        return Vec::new();
    };
    if !is_dep5(header) {
        return Vec::new();
    }
    let is_files = |p: &[(&str, &str)]| p.iter().any(|(k, _)| k.eq_ignore_ascii_case("Files"));

    let mut found = Found::default();
    // The header and Files paragraphs first, then the stand-alone License paragraphs that
    // name something new.
    let mains = std::iter::once(header.as_slice())
        .chain(rest.iter().map(Vec::as_slice).filter(|p| is_files(p)));
    for spec in mains.filter_map(license_field) {
        found.add(spdx_of(spec));
    }
    for spec in rest
        .iter()
        .map(Vec::as_slice)
        .filter(|p| !is_files(p))
        .filter_map(license_field)
    {
        let expr = spdx_of(spec);
        if !found.names_nothing_new(&expr) {
            found.add(expr);
        }
    }
    found.parts
}

/// The first line of a paragraph's `License` field, unless empty.
fn license_field<'a>(paragraph: &[(&'a str, &'a str)]) -> Option<&'a str> {
    paragraph
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("License"))
        .map(|(_, v)| *v)
        .filter(|v| !v.is_empty())
}

/// The licenses of a file as they are found.
#[derive(Default)]
struct Found {
    /// The distinct parts, in order.
    parts: Vec<Expr>,
    /// The parts' keys ([`Expr::key`]).
    keys: BTreeSet<String>,
    /// Every license named so far, and the license of each `WITH` an exception.
    named: BTreeSet<String>,
}

impl Found {
    fn add(&mut self, expr: Expr) {
        let mut terms = Vec::new();
        expr.terms(&mut terms);
        for t in terms {
            self.named.extend(names_in(t));
        }
        for part in expr.conjuncts() {
            if self.parts.len() < MAX_LICENSES && self.keys.insert(part.key()) {
                self.parts.push(part);
            }
        }
    }

    fn names_nothing_new(&self, expr: &Expr) -> bool {
        let mut terms = Vec::new();
        expr.terms(&mut terms);
        terms.iter().all(|t| self.named.contains(*t))
    }
}

/// The license a term names, and the license it adds an exception to if it does (so that a
/// stand-alone License paragraph giving the text of `GPL-2+` counts as named by
/// `GPL-2+ with OpenSSL exception`).
fn names_in(term: &str) -> Vec<String> {
    let mut names = vec![term.to_string()];
    if let Some((base, _)) = term.split_once(" WITH ") {
        names.push(base.to_string());
    } else if let Some((base, _)) = term.split_once(" with ") {
        names.push(license(base).render());
    }
    names
}

/// A word of a license specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word<'a> {
    Name(&'a str),
    And,
    Or,
    With,
    Comma,
    Open,
    Close,
}

fn words(spec: &str) -> Vec<Word<'_>> {
    let mut out = Vec::new();
    for mut w in spec.split_whitespace().take(MAX_WORDS) {
        while let Some(rest) = w.strip_prefix('(') {
            out.push(Word::Open);
            w = rest;
        }
        let mut tail = Vec::new();
        loop {
            if let Some(rest) = w.strip_suffix(',') {
                tail.push(Word::Comma);
                w = rest;
            } else if let Some(rest) = w.strip_suffix(')') {
                tail.push(Word::Close);
                w = rest;
            } else {
                break;
            }
        }
        if !w.is_empty() {
            out.push(if w.eq_ignore_ascii_case("and") {
                Word::And
            } else if w.eq_ignore_ascii_case("or") {
                Word::Or
            } else if w.eq_ignore_ascii_case("with") {
                Word::With
            } else {
                Word::Name(w)
            });
        }
        out.extend(tail.into_iter().rev());
    }
    out
}

/// The first line of a Debian `License` field (`GPL-2+ or Artistic`) as an expression
/// (`GPL-2.0-or-later OR Artistic-1.0-Perl`): names mapped where the mapping is exact, others
/// kept as written (with parentheses made brackets, so that the expression's own grouping stays
/// unambiguous).
fn spdx_of(spec: &str) -> Expr {
    let spec = crate::parse::bounded(spec.trim());
    let words = words(&spec);
    let mut rest = words.as_slice();
    match parse_spec(&mut rest, 0) {
        Some(e) if rest.is_empty() => e,
        // Not the syntax the format defines: one license, named by the whole line.
        _ => Expr::Term(unknown(&spec)),
    }
}

/// How deeply parentheses may nest.
const MAX_DEPTH: usize = 16;

/// `spec := segment (',' ('and'|'or') segment)* ','?`, the comma-joined conjunctions binding
/// loosest and from the left. Parentheses, which the format does not define but maintainers
/// write (`BSD-2-clause and (Apache-2.0 or MIT)`), group as in SPDX.
fn parse_spec(rest: &mut &[Word<'_>], depth: usize) -> Option<Expr> {
    let mut expr = parse_segment(rest, depth)?;
    while let Some((Word::Comma, after)) = rest.split_first() {
        let or = match after.first() {
            Some(Word::Or) => true,
            Some(Word::And) => false,
            // A trailing comma.
            None => {
                *rest = after;
                break;
            }
            _ => return None,
        };
        *rest = &after[1..];
        let right = parse_segment(rest, depth)?;
        expr = Expr::join(or, vec![expr, right]);
    }
    Some(expr)
}

/// `segment := conjunction ('or' conjunction)*`
fn parse_segment(rest: &mut &[Word<'_>], depth: usize) -> Option<Expr> {
    let mut any = vec![parse_conjunction(rest, depth)?];
    while let Some((Word::Or, after)) = rest.split_first() {
        *rest = after;
        any.push(parse_conjunction(rest, depth)?);
    }
    Some(Expr::join(true, any))
}

/// `conjunction := license ('and' license)*`
fn parse_conjunction(rest: &mut &[Word<'_>], depth: usize) -> Option<Expr> {
    let mut all = vec![parse_license(rest, depth)?];
    while let Some((Word::And, after)) = rest.split_first() {
        *rest = after;
        all.push(parse_license(rest, depth)?);
    }
    Some(Expr::join(false, all))
}

/// `license := '(' spec ')' | NAME ('with' KEYWORD+ 'exception')?`
fn parse_license(rest: &mut &[Word<'_>], depth: usize) -> Option<Expr> {
    let (first, after) = rest.split_first()?;
    let name = match first {
        Word::Name(name) => *name,
        Word::Open if depth < MAX_DEPTH => {
            *rest = after;
            let inner = parse_spec(rest, depth + 1)?;
            let (Word::Close, after) = rest.split_first()? else {
                return None;
            };
            *rest = after;
            return Some(inner);
        }
        _ => return None,
    };
    *rest = after;
    let Some((Word::With, after)) = rest.split_first() else {
        return Some(license(name));
    };
    // Keywords up to the word `exception`.
    let end = after
        .iter()
        .position(|w| matches!(w, Word::Name(n) if n.eq_ignore_ascii_case("exception")))?;
    let mut keywords = Vec::with_capacity(end);
    for w in &after[..end] {
        let Word::Name(k) = w else { return None };
        keywords.push(*k);
    }
    if keywords.is_empty() {
        return None;
    }
    *rest = &after[end + 1..];
    let keywords = keywords.join(" ");
    Some(match (name_to_spdx(name), exception_to_spdx(&keywords)) {
        (Some(Expr::Term(id)), Some(exception)) if spdx::license_id(&id).is_some() => {
            Expr::Term(format!("{id} WITH {exception}"))
        }
        _ => Expr::Term(unknown(&format!("{name} with {keywords} exception"))),
    })
}

/// A name of no exact SPDX identifier, as written, but with parentheses made brackets and the
/// words `and`, `or` and `with` in lower case: SPDX's grouping and operators (upper case) stay
/// unambiguous around it.
fn unknown(name: &str) -> String {
    name.split_whitespace()
        .map(|w| {
            let w = w.replace('(', "[").replace(')', "]");
            if ["and", "or", "with"]
                .iter()
                .any(|o| w.eq_ignore_ascii_case(o))
            {
                w.to_ascii_lowercase()
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn license(name: &str) -> Expr {
    name_to_spdx(name).unwrap_or_else(|| Expr::Term(unknown(name)))
}

/// A family of versioned licenses: its lower-case name, whether it is GNU's, and each version
/// with its SPDX identifier.
type Family = (&'static str, bool, &'static [(&'static str, &'static str)]);

/// The families of Debian short names with versions, by lower-case family name: each known
/// version (trailing `.0`s dropped, as the format says `2.0` and `2` are equal) and its SPDX
/// identifier without the `-only`/`-or-later` of GNU licenses, and whether the family is GNU's.
const FAMILIES: &[Family] = &[
    (
        "gpl",
        true,
        &[("1", "GPL-1.0"), ("2", "GPL-2.0"), ("3", "GPL-3.0")],
    ),
    (
        "lgpl",
        true,
        &[("2", "LGPL-2.0"), ("2.1", "LGPL-2.1"), ("3", "LGPL-3.0")],
    ),
    ("agpl", true, &[("1", "AGPL-1.0"), ("3", "AGPL-3.0")]),
    (
        "gfdl",
        true,
        &[
            ("1.1", "GFDL-1.1"),
            ("1.2", "GFDL-1.2"),
            ("1.3", "GFDL-1.3"),
        ],
    ),
    (
        "gfdl-niv",
        true,
        &[
            ("1.1", "GFDL-1.1-no-invariants"),
            ("1.2", "GFDL-1.2-no-invariants"),
            ("1.3", "GFDL-1.3-no-invariants"),
        ],
    ),
    (
        "apache",
        false,
        &[
            ("1", "Apache-1.0"),
            ("1.1", "Apache-1.1"),
            ("2", "Apache-2.0"),
        ],
    ),
    // Debian's Artistic license 1.0 (/usr/share/common-licenses/Artistic) is Perl's.
    (
        "artistic",
        false,
        &[("1", "Artistic-1.0-Perl"), ("2", "Artistic-2.0")],
    ),
    (
        "mpl",
        false,
        &[("1", "MPL-1.0"), ("1.1", "MPL-1.1"), ("2", "MPL-2.0")],
    ),
    ("cc0", false, &[("1", "CC0-1.0")]),
    ("cddl", false, &[("1", "CDDL-1.0"), ("1.1", "CDDL-1.1")]),
    ("cpl", false, &[("1", "CPL-1.0")]),
    ("efl", false, &[("1", "EFL-1.0"), ("2", "EFL-2.0")]),
    (
        "lppl",
        false,
        &[
            ("1", "LPPL-1.0"),
            ("1.1", "LPPL-1.1"),
            ("1.2", "LPPL-1.2"),
            ("1.3a", "LPPL-1.3a"),
            ("1.3c", "LPPL-1.3c"),
        ],
    ),
    ("python", false, &[("2", "Python-2.0")]),
    ("qpl", false, &[("1", "QPL-1.0")]),
    (
        "zope",
        false,
        &[("1.1", "ZPL-1.1"), ("2", "ZPL-2.0"), ("2.1", "ZPL-2.1")],
    ),
    (
        "cc-by",
        false,
        &[
            ("1", "CC-BY-1.0"),
            ("2", "CC-BY-2.0"),
            ("2.5", "CC-BY-2.5"),
            ("3", "CC-BY-3.0"),
            ("4", "CC-BY-4.0"),
        ],
    ),
    (
        "cc-by-sa",
        false,
        &[
            ("1", "CC-BY-SA-1.0"),
            ("2", "CC-BY-SA-2.0"),
            ("2.5", "CC-BY-SA-2.5"),
            ("3", "CC-BY-SA-3.0"),
            ("4", "CC-BY-SA-4.0"),
        ],
    ),
    (
        "cc-by-nd",
        false,
        &[
            ("1", "CC-BY-ND-1.0"),
            ("2", "CC-BY-ND-2.0"),
            ("2.5", "CC-BY-ND-2.5"),
            ("3", "CC-BY-ND-3.0"),
            ("4", "CC-BY-ND-4.0"),
        ],
    ),
    (
        "cc-by-nc",
        false,
        &[
            ("1", "CC-BY-NC-1.0"),
            ("2", "CC-BY-NC-2.0"),
            ("2.5", "CC-BY-NC-2.5"),
            ("3", "CC-BY-NC-3.0"),
            ("4", "CC-BY-NC-4.0"),
        ],
    ),
    (
        "cc-by-nc-sa",
        false,
        &[
            ("1", "CC-BY-NC-SA-1.0"),
            ("2", "CC-BY-NC-SA-2.0"),
            ("2.5", "CC-BY-NC-SA-2.5"),
            ("3", "CC-BY-NC-SA-3.0"),
            ("4", "CC-BY-NC-SA-4.0"),
        ],
    ),
    (
        "cc-by-nc-nd",
        false,
        &[
            ("1", "CC-BY-NC-ND-1.0"),
            ("2", "CC-BY-NC-ND-2.0"),
            ("2.5", "CC-BY-NC-ND-2.5"),
            ("3", "CC-BY-NC-ND-3.0"),
            ("4", "CC-BY-NC-ND-4.0"),
        ],
    ),
];

/// Debian short names without versions that mean one license, lower-case.
const NAMES: &[(&str, &str)] = &[
    ("expat", "MIT"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("isc", "ISC"),
    ("zlib", "Zlib"),
    // The format's own Perl dual-license example names Artistic without a version, and Debian
    // ships one Artistic license 1.0 text, Perl's.
    ("artistic", "Artistic-1.0-Perl"),
];

/// The SPDX expression of a Debian short name (`GPL-2+`, `Expat`, `Perl`), when exact.
fn name_to_spdx(name: &str) -> Option<Expr> {
    let lower = name.to_ascii_lowercase();
    let (base, plus) = match lower.strip_suffix('+') {
        Some(b) => (b, true),
        None => (lower.as_str(), false),
    };
    if base == "perl" && !plus {
        // "Perl license (use GPL-1+ or Artistic-1 instead)", says the format.
        return Some(Expr::Or(vec![
            Expr::Term("GPL-1.0-or-later".into()),
            Expr::Term("Artistic-1.0-Perl".into()),
        ]));
    }
    if let Some((_, id)) = NAMES.iter().find(|(n, _)| *n == base) {
        return (!plus).then(|| Expr::Term((*id).to_string()));
    }
    if let Some((family, version)) = split_version(base)
        && let Some((_, gnu, versions)) = FAMILIES.iter().find(|(f, _, _)| *f == family)
    {
        let (_, id) = versions.iter().find(|(v, _)| *v == version)?;
        let id = match (*gnu, plus) {
            (true, true) => format!("{id}-or-later"),
            (true, false) => format!("{id}-only"),
            // SPDX's `+` is valid syntax, but the official tools know no such license.
            (false, true) => return None,
            (false, false) => (*id).to_string(),
        };
        return spdx::license_id(&id).map(|_| Expr::Term(id));
    }
    // A maintainer may write an SPDX identifier itself (`MIT`, `OpenSSL`, `GPL-2.0-only`):
    // taken when it is one exactly, current, and without `+`.
    let id = spdx::license_id(name)?;
    (id.name == name && !id.is_deprecated()).then(|| Expr::Term(name.to_string()))
}

/// `gpl-2.0` as (`gpl`, `2`): the family and the version after its last dash, trailing `.0`s
/// dropped; `None` when the name ends in no version.
fn split_version(name: &str) -> Option<(&str, String)> {
    let (family, version) = name.rsplit_once('-')?;
    let mut chars = version.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_digit())
        || !version
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c.is_ascii_lowercase())
    {
        return None;
    }
    let mut version = version.to_string();
    while let Some(v) = version.strip_suffix(".0") {
        version = v.to_string();
    }
    Some((family, version))
}

/// The SPDX exception of Debian's `with KEYWORDS exception`, when exact.
fn exception_to_spdx(keywords: &str) -> Option<&'static str> {
    let known = match keywords.to_ascii_lowercase().as_str() {
        // The format's GPL Font exception is the FSF's, SPDX's Font-exception-2.0.
        "font" => Some("Font-exception-2.0"),
        "classpath" => Some("Classpath-exception-2.0"),
        "llvm" => Some("LLVM-exception"),
        _ => None,
    };
    if known.is_some() {
        return known;
    }
    // Or an SPDX exception identifier itself.
    let id = spdx::exception_id(keywords)?;
    (id.name == keywords && !id.is_deprecated()).then_some(id.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first line of a `License` field as SPDX-style text.
    fn to_spdx(spec: &str) -> String {
        spdx_of(spec).render()
    }
    use crate::parse::MAX_VALUE;
    use proptest::prelude::*;

    /// Modelled on Debian's redis-server: BSD-3-clause upstream, BSD-2-clause and Expat parts
    /// (one written `MIT`), stand-alone License paragraphs giving the texts.
    const REDIS: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
Upstream-Name: redis\n\
Source: https://github.com/redis/redis\n\
\n\
Files: *\n\
Copyright: © 2006-2014 Salvatore Sanfilippo\n\
License: BSD-3-clause\n\
\n\
Files: src/lzf*\n\
Copyright:\n © 2000-2007 Marc Alexander Lehmann\n © 2009-2012 Salvatore Sanfilippo\n\
License: BSD-2-clause\n\
\n\
Files: deps/lua/*\n\
Copyright: © 1994-2012 Lua.org, PUC-Rio.\n\
License: MIT\n Permission is hereby granted, free of charge, to any person obtaining a copy\n .\n THE SOFTWARE IS PROVIDED \"AS IS\"\n\
\n\
Files: debian/*\n\
Copyright: © 2009 Chris Lamb\n\
License: BSD-3-clause\n\
\n\
License: BSD-3-clause\n Redistribution and use in source and binary forms, with or without\n modification, are permitted provided that the following conditions are met:\n\
\n\
License: BSD-2-clause\n Redistribution and use in source and binary forms, with or without\n";

    /// Modelled on zlib1g: a header with Files-Excluded, the same license everywhere.
    const ZLIB: &str = "Format: http://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
Upstream-Name: zlib\n\
Comment: This is the pre-packaged Debian Linux version of the zlib compression\n library.\n .\n It was packaged by ...\n\
Files-Excluded:\n contrib/ada\n win32\n\
\n\
Files: *\n\
Copyright: 1995-2013 Jean-loup Gailly and Mark Adler\n\
License: Zlib\n\
\n\
Files: debian/*\n\
Copyright: 2000-2017 Mark Brown\n\
License: Zlib\n\
\n\
License: Zlib\n This software is provided 'as-is', without any express or implied\n warranty.\n";

    /// Modelled on libc6: free text, no Format line.
    const LIBC6: &str = "This is the Debian prepackaged version of the GNU C Library version 2.36.\n\
\n\
It was put together by the GNU Libc Maintainers <debian-glibc@lists.debian.org>\n\
from <https://sourceware.org/git/glibc.git>\n\
\n\
* Most of the GNU C library is under the following copyright:\n\
\n\
    Copyright (C) 1991-2015 Free Software Foundation, Inc.\n\
\n\
License: LGPL-2.1+ (a line that looks like a field)\n";

    /// A Perl module's, and a file with every construction of the syntax.
    const MIXED: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
Upstream-Name: Mixed\n\
License: GPL-2+ or Artistic-2.0, and BSD-3-clause\n\
\n\
Files: *\n\
Copyright: 2001, Someone\n\
License: Artistic or GPL-1+\n\
\n\
Files: fonts/*\n\
Copyright: 2003, Font Foundry\n\
License: GPL-2+ with Font exception\n\
\n\
Files: ssl/*\n\
Copyright: 2004, Linker\n\
License: GPL-2+ with OpenSSL exception\n\
\n\
Files: doc/*\n\
Copyright: 2005, Writer\n\
License: public-domain\n The author put these files in the public domain.\n\
\n\
Files: lib/*\n\
Copyright: 2006, Library\n\
License: MPL-2.0 and BSD-3-clause\n\
\n\
Files: old/*\n\
Copyright: 2007, Old\n\
license: lgpl-2.1+\n\
\n\
Files: perl/*\n\
Copyright: 2008, Perl\n\
License: GPL-1+ or Artistic\n\
\n\
License: Artistic\n The \"Artistic License\"\n\
\n\
License: GPL-1+\n This program is free software\n\
\n\
License: Unreferenced-Custom\n Terms of a license no Files paragraph names.\n";

    #[test]
    fn redis_is_bsd_and_its_parts() {
        assert_eq!(
            licenses(REDIS.as_bytes()),
            ["BSD-3-Clause", "BSD-2-Clause", "MIT"]
        );
        assert_eq!(
            package_license(REDIS.as_bytes()).as_deref(),
            Some("BSD-3-Clause AND BSD-2-Clause AND MIT")
        );
    }

    #[test]
    fn zlib_is_zlib_once() {
        assert_eq!(package_license(ZLIB.as_bytes()).as_deref(), Some("Zlib"));
        let with_bom = format!("\u{feff}{ZLIB}");
        assert_eq!(
            package_license(with_bom.as_bytes()).as_deref(),
            Some("Zlib")
        );
    }

    #[test]
    fn a_single_choice_is_not_parenthesised() {
        let perl = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n\
Files: *\nLicense: Artistic or GPL-1+\n\nFiles: debian/*\nLicense: GPL-1+ or Artistic\n";
        assert_eq!(
            package_license(perl.as_bytes()).as_deref(),
            Some("Artistic-1.0-Perl OR GPL-1.0-or-later")
        );
    }

    #[test]
    fn a_file_not_in_the_format_names_nothing() {
        assert!(licenses(LIBC6.as_bytes()).is_empty());
        assert_eq!(package_license(LIBC6.as_bytes()), None);
        // A draft's Format, or another version's, is not 1.0 either.
        let draft = "Format: http://dep.debian.net/deps/dep5\n\nFiles: *\nLicense: GPL-2+\n";
        assert_eq!(package_license(draft.as_bytes()), None);
        let future = REDIS.replace("copyright-format/1.0/", "copyright-format/2.0/");
        assert_eq!(package_license(future.as_bytes()), None);
        // A Format in a later paragraph does not count.
        let late = format!("Upstream-Name: x\n\n{REDIS}");
        assert_eq!(package_license(late.as_bytes()), None);
        assert_eq!(package_license(b""), None);
    }

    #[test]
    fn every_construction_maps_and_standalone_texts_are_not_counted_twice() {
        assert_eq!(
            licenses(MIXED.as_bytes()),
            [
                "GPL-2.0-or-later OR Artistic-2.0",
                "BSD-3-Clause",
                "Artistic-1.0-Perl OR GPL-1.0-or-later",
                "GPL-2.0-or-later WITH Font-exception-2.0",
                "GPL-2+ with OpenSSL exception",
                "public-domain",
                "MPL-2.0",
                "LGPL-2.1-or-later",
                "Unreferenced-Custom",
            ]
        );
        assert_eq!(
            package_license(MIXED.as_bytes()).as_deref(),
            Some(
                "(GPL-2.0-or-later OR Artistic-2.0) AND BSD-3-Clause AND (Artistic-1.0-Perl OR \
                 GPL-1.0-or-later) AND GPL-2.0-or-later WITH Font-exception-2.0 AND GPL-2+ with \
                 OpenSSL exception AND public-domain AND MPL-2.0 AND LGPL-2.1-or-later AND \
                 Unreferenced-Custom"
            )
        );
    }

    #[test]
    fn a_standalone_text_of_a_license_with_an_exception_is_not_counted() {
        let file = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n\
Files: *\nCopyright: 2001 A\nLicense: GPL-2+ with OpenSSL exception\n\n\
Files: fonts/*\nCopyright: 2001 B\nLicense: GPL-3+ with Font exception\n\n\
License: GPL-2+\n This program is free software\n\n\
License: GPL-3+\n This program is free software\n\n\
License: GPL-2+ with OpenSSL exception\n In addition, as a special exception\n";
        assert_eq!(
            licenses(file.as_bytes()),
            [
                "GPL-2+ with OpenSSL exception",
                "GPL-3.0-or-later WITH Font-exception-2.0"
            ]
        );
    }

    #[test]
    fn the_syntax() {
        // `and` binds tighter than `or`, unless a comma precedes it.
        assert_eq!(to_spdx("A or B and C"), "A OR (B AND C)");
        assert_eq!(to_spdx("A or B, and C"), "(A OR B) AND C");
        assert_eq!(to_spdx("A and B, or C"), "(A AND B) OR C");
        assert_eq!(to_spdx("A, and B or C"), "A AND (B OR C)");
        assert_eq!(to_spdx("GPL-2+ OR Expat"), "GPL-2.0-or-later OR MIT");
        assert_eq!(to_spdx("GPL-2+,"), "GPL-2.0-or-later");
        // Parentheses, as maintainers write them.
        assert_eq!(
            to_spdx("Apache-2.0 with LLVM exception and (Apache-2.0 or MIT)"),
            "Apache-2.0 WITH LLVM-exception AND (Apache-2.0 OR MIT)"
        );
        assert_eq!(
            to_spdx("((Apache-2.0 OR MIT)) AND (BSD-3-Clause or (ISC and Zlib)),"),
            "(Apache-2.0 OR MIT) AND (BSD-3-Clause OR (ISC AND Zlib))"
        );
        // Not the syntax: one name, the whole line.
        assert_eq!(to_spdx("GPL-2+ (see below)"), "GPL-2+ [see below]");
        assert_eq!(to_spdx("BSD (3 clause)"), "BSD [3 clause]");
        assert_eq!(to_spdx("(MIT or ISC"), "[MIT or ISC");
        assert_eq!(to_spdx("MIT) or (ISC"), "MIT] or [ISC");
        assert_eq!(to_spdx("MIT or ISC, )"), "MIT or ISC, ]");
        let deep = format!("{}MIT{}", "(".repeat(40), ")".repeat(40));
        assert_eq!(to_spdx(&deep), unknown(&deep));
        assert_eq!(to_spdx("GPL-2+, BSD"), "GPL-2+, BSD");
        assert_eq!(to_spdx("GPL-2 with"), "GPL-2 with");
        assert_eq!(to_spdx("GPL-2 with exception"), "GPL-2 with exception");
        assert_eq!(to_spdx("or GPL-2"), "or GPL-2");
        assert_eq!(to_spdx("GPL-2 and"), "GPL-2 and");
    }

    #[test]
    fn the_mapping() {
        for (debian, spdx) in [
            ("GPL-1", "GPL-1.0-only"),
            ("GPL-1+", "GPL-1.0-or-later"),
            ("GPL-2", "GPL-2.0-only"),
            ("GPL-2+", "GPL-2.0-or-later"),
            ("GPL-2.0+", "GPL-2.0-or-later"),
            ("GPL-2.0", "GPL-2.0-only"),
            ("gpl-3", "GPL-3.0-only"),
            ("GPL-3+", "GPL-3.0-or-later"),
            ("LGPL-2", "LGPL-2.0-only"),
            ("LGPL-2+", "LGPL-2.0-or-later"),
            ("LGPL-2.1", "LGPL-2.1-only"),
            ("LGPL-2.1+", "LGPL-2.1-or-later"),
            ("LGPL-3+", "LGPL-3.0-or-later"),
            ("AGPL-3", "AGPL-3.0-only"),
            ("AGPL-3+", "AGPL-3.0-or-later"),
            ("GFDL-1.2+", "GFDL-1.2-or-later"),
            ("GFDL-1.3", "GFDL-1.3-only"),
            ("GFDL-NIV-1.3+", "GFDL-1.3-no-invariants-or-later"),
            ("BSD-2-clause", "BSD-2-Clause"),
            ("BSD-3-clause", "BSD-3-Clause"),
            ("BSD-4-clause", "BSD-4-Clause"),
            ("Expat", "MIT"),
            ("Apache-2.0", "Apache-2.0"),
            ("Apache-2", "Apache-2.0"),
            ("Artistic", "Artistic-1.0-Perl"),
            ("Artistic-1.0", "Artistic-1.0-Perl"),
            ("Artistic-2.0", "Artistic-2.0"),
            ("Perl", "GPL-1.0-or-later OR Artistic-1.0-Perl"),
            ("Zlib", "Zlib"),
            ("ISC", "ISC"),
            ("MPL-1.1", "MPL-1.1"),
            ("MPL-2.0", "MPL-2.0"),
            ("CC0-1.0", "CC0-1.0"),
            ("CC-BY-SA-3.0", "CC-BY-SA-3.0"),
            ("CC-BY-4.0", "CC-BY-4.0"),
            ("LPPL-1.3c", "LPPL-1.3c"),
            ("Python-2.0", "Python-2.0"),
            ("Zope-2.1", "ZPL-2.1"),
            // SPDX identifiers as maintainers write them.
            ("MIT", "MIT"),
            ("OpenSSL", "OpenSSL"),
            ("GPL-2.0-only", "GPL-2.0-only"),
            ("BSD-3-Clause", "BSD-3-Clause"),
            (
                "GPL-2+ with Classpath exception",
                "GPL-2.0-or-later WITH Classpath-exception-2.0",
            ),
            (
                "Apache-2.0 with LLVM exception",
                "Apache-2.0 WITH LLVM-exception",
            ),
            (
                "GPL-3+ with GCC-exception-3.1 exception",
                "GPL-3.0-or-later WITH GCC-exception-3.1",
            ),
        ] {
            assert_eq!(to_spdx(debian), spdx, "{debian}");
        }
        // No exact SPDX identifier: kept as written.
        for kept in [
            "public-domain",
            "GPL",
            "LGPL",
            "Apache",
            "MPL",
            "BSD",
            "GPL-4",
            "GPL-2.0+-only",
            "mit",
            "GPL-2.0-only+",
            "BSD-3-clause+",
            "Apache-2.0+",
            "MPL-2.0+",
            "permissive",
            "GPL-2+ with OpenSSL exception",
            "GPL-2+ with Autoconf exception",
            "other with Font exception",
        ] {
            assert_eq!(to_spdx(kept), kept);
        }
    }

    #[test]
    fn mapped_names_are_strict_spdx() {
        for (family, _, versions) in FAMILIES {
            for (v, _) in *versions {
                for plus in ["", "+"] {
                    let name = format!("{family}-{v}{plus}");
                    let Some(e) = name_to_spdx(&name) else {
                        continue;
                    };
                    let text = e.render();
                    assert!(spdx::Expression::parse(&text).is_ok(), "{name}: {text}");
                }
                assert!(
                    name_to_spdx(&format!("{family}-{v}")).is_some(),
                    "{family}-{v}"
                );
            }
        }
    }

    #[test]
    fn licenses_are_bounded() {
        let mut file = String::from(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n",
        );
        for i in 0..1000 {
            file.push_str(&format!(
                "Files: f{i}\nCopyright: x\nLicense: custom-{i}\n\n"
            ));
        }
        assert_eq!(licenses(file.as_bytes()).len(), MAX_LICENSES);
        let long = format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: {}\n",
            "é".repeat(4 * MAX_VALUE)
        );
        assert!(licenses(long.as_bytes())[0].len() <= MAX_VALUE);
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            for l in licenses(&data) {
                prop_assert!(!l.is_empty());
            }
        }

        #[test]
        fn never_panics_on_license_soup(lines in proptest::collection::vec(
            "(License|Files|Format|X)?:? ?(GPL-2\\+|or|and|with|exception|,|\\(|\\)|Expat|[a-z0-9 .+-]{0,8}| ){0,6}",
            0..32)) {
            let mut file = String::from(
                "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n",
            );
            file.push_str(&lines.join("\n"));
            let all = licenses(file.as_bytes());
            prop_assert!(all.len() <= MAX_LICENSES);
            prop_assert_eq!(package_license(file.as_bytes()).is_some(), !all.is_empty());
        }

        #[test]
        fn specs_never_panic(spec in "(GPL-2\\+|or|and|with|exception|,|\\(|\\)|é|[A-Za-z0-9.+-]{0,6}| ){0,12}") {
            let _ = to_spdx(&spec);
        }
    }
}
