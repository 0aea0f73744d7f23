//! Where each value of a YAML document sits: a map from paths such as `services[1].name` to the
//! line and column of the value (and of its key). serde does not keep positions, so semantic
//! errors found after parsing look their position up here.

use crate::limits::{MAX_DEPTH, MAX_VALUES};
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

/// Paths of one document mapped to positions.
#[derive(Debug, Default, Clone)]
pub struct Locations {
    values: HashMap<String, Position>,
    keys: HashMap<String, Position>,
}

impl Locations {
    /// Index `text`. A document that does not parse yields an empty index (serde reports the
    /// syntax error with its own position).
    /// The walk pulls events one at a time, without recursion. It yields an empty index where
    /// the document nests deeper than [`MAX_DEPTH`] and stops indexing after [`MAX_VALUES`]
    /// values, bounds that documents the parser accepts never pass: its time and memory stay
    /// linear in the size of the text.
    pub fn index(text: &str) -> Self {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(text);
        let mut events = 0usize;
        loop {
            match parser.next_token() {
                Ok((Event::DocumentEnd | Event::StreamEnd, _)) => return walker.locations,
                Ok((ev, mark)) => {
                    walker.on_event(ev, mark);
                    events += 1;
                    if walker.stack.len() > MAX_DEPTH {
                        return Self::default();
                    }
                    if events > 2 * MAX_VALUES {
                        return walker.locations;
                    }
                }
                Err(_) => return Self::default(),
            }
        }
    }

    /// Position of the value at `path`, falling back to its key, then to the nearest ancestor.
    pub fn find(&self, path: &str) -> Option<Position> {
        let mut p = path.to_string();
        loop {
            if let Some(pos) = self.values.get(&p).or_else(|| self.keys.get(&p)) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
        }
    }

    /// Position of the key at `path` (the `name:` of `services[0].name`), if it is a mapping key.
    pub fn key(&self, path: &str) -> Option<Position> {
        self.keys.get(path).copied()
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        seen_key: bool,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    locations: Locations,
}

fn position(mark: Marker) -> Position {
    Position {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Walker {
    /// The path of the value about to start, consuming the pending key or sequence slot.
    fn next_value_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key, .. }) => key.take().map(|k| join(path, &k)),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
        }
    }

    fn is_expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = position(mark);
        match ev {
            Event::Scalar(value, ..) => {
                if self.is_expecting_key() {
                    if let Some(Frame::Map {
                        path,
                        key,
                        seen_key,
                    }) = self.stack.last_mut()
                    {
                        // A block mapping "starts" where its first key is: point there.
                        if !*seen_key {
                            *seen_key = true;
                            self.locations.values.insert(path.clone(), pos);
                        }
                        self.locations.keys.insert(join(path, &value), pos);
                        *key = Some(value);
                    }
                } else if let Some(p) = self.next_value_path() {
                    self.locations.values.insert(p, pos);
                }
            }
            Event::Alias(_) => {
                if !self.is_expecting_key()
                    && let Some(p) = self.next_value_path()
                {
                    self.locations.values.insert(p, pos);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(ev, Event::MappingStart(..));
                // A collection used as a mapping key has no useful path: index it under "?".
                let path = if self.is_expecting_key() {
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some("?".into());
                    }
                    "?".to_string()
                } else {
                    let p = self.next_value_path().unwrap_or_default();
                    self.locations.values.insert(p.clone(), pos);
                    p
                };
                self.stack.push(if is_map {
                    Frame::Map {
                        path,
                        key: None,
                        seen_key: false,
                    }
                } else {
                    Frame::Seq { path, next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_values_and_keys() {
        let text = "kernel:\n  image: k\nservices:\n  - name: a\n    image: b\n  - name: c\n    binds:\n      - /x:/y\n";
        let l = Locations::index(text);
        assert_eq!(
            l.find("kernel.image"),
            Some(Position {
                line: 2,
                column: 10
            })
        );
        assert_eq!(
            l.find("services[1].name"),
            Some(Position {
                line: 6,
                column: 11
            })
        );
        assert_eq!(
            l.key("services[1].name"),
            Some(Position { line: 6, column: 5 })
        );
        assert_eq!(
            l.find("services[1].binds[0]"),
            Some(Position { line: 8, column: 9 })
        );
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(
            l.find("services[1].binds[7]"),
            Some(Position { line: 8, column: 7 })
        );
    }

    #[test]
    fn broken_yaml_gives_empty_index() {
        assert_eq!(Locations::index("a: \"unterminated\n").find("a"), None);
    }
}
