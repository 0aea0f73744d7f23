//! JSON written the way Go's `json.MarshalIndent(v, "", "    ")` writes it, which is how
//! LinuxKit writes config.json and runtime.json: four-space indentation, no trailing newline,
//! and `<`, `>`, `&`, U+2028 and U+2029 inside strings escaped as `\u003c` and so on.

use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};
use std::io::{self, Write};

/// Serialize `value` as Go's `json.MarshalIndent(value, "", "    ")` would.
///
/// kiln's configuration types and `serde_json::Value` always serialize; a type whose
/// serialization fails (a map with non-string keys) gives the bytes written up to the failure.
pub fn to_go_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter::new());
    let _ = value.serialize(&mut ser);
    out
}

/// serde_json's pretty formatter with Go's HTML-safe string escaping.
struct GoFormatter {
    pretty: PrettyFormatter<'static>,
}

impl GoFormatter {
    fn new() -> Self {
        GoFormatter {
            pretty: PrettyFormatter::with_indent(b"    "),
        }
    }
}

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escape = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escape.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn begin_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.begin_array(writer)
    }

    fn end_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.end_array(writer)
    }

    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.pretty.begin_array_value(writer, first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.end_array_value(writer)
    }

    fn begin_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.begin_object(writer)
    }

    fn end_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.end_object(writer)
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.pretty.begin_object_key(writer, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.begin_object_value(writer)
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.pretty.end_object_value(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::to_go_json;
    use serde_json::json;

    #[test]
    fn indents_by_four_and_escapes_like_go() {
        let v =
            json!({"args": ["sh", "-c", "a && b <x> \u{2028}\"q\"\n"], "empty": {}, "none": []});
        let got = String::from_utf8(to_go_json(&v)).expect("utf-8");
        assert_eq!(
            got,
            "{\n    \"args\": [\n        \"sh\",\n        \"-c\",\n        \
             \"a \\u0026\\u0026 b \\u003cx\\u003e \\u2028\\\"q\\\"\\n\"\n    ],\n    \
             \"empty\": {},\n    \"none\": []\n}"
        );
        let back: serde_json::Value = serde_json::from_str(&got).expect("valid JSON");
        assert_eq!(back, v);
    }
}
