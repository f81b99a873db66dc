//! Maps field paths (`routes[2].match.host`) to their line and column in the source text.
//!
//! `serde_yaml::Value` forgets positions, so the YAML event stream is walked once more with
//! `yaml-rust2`, recording where each key and each value starts. Lookups fall back to the longest
//! indexed prefix, so a path that names a missing field points at the mapping that lacks it.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, ScanError};

use crate::error::join;

/// 1-based (line, column).
pub(crate) type Pos = (usize, usize);

/// Positions of every node of the first YAML document, by field path.
#[derive(Debug, Default)]
pub(crate) struct Index {
    values: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
    /// Keys that appear twice in one mapping (serde_yaml refuses them without a position).
    duplicates: Vec<(String, Pos)>,
}

fn pos(mark: Marker) -> Pos {
    // yaml-rust2 lines are 1-based, columns 0-based.
    (mark.line().max(1), mark.col() + 1)
}

impl Index {
    /// Index `text`. A syntax error (which `serde_yaml` reports on its own) just leaves the index
    /// partial: positions are a convenience, never a reason to fail.
    pub fn build(text: &str) -> Index {
        let mut walker = Walker {
            parser: Parser::new_from_str(text),
            index: Index::default(),
        };
        let _ = walker.document();
        walker.index
    }

    /// Keys repeated within one mapping, with the position of the repetition.
    pub fn duplicates(&self) -> &[(String, Pos)] {
        &self.duplicates
    }

    /// Position of the node at `path`, or of its longest indexed ancestor; `at_key` prefers the
    /// position of the mapping key that names the node.
    pub fn locate(&self, path: &str, at_key: bool) -> Pos {
        if at_key && let Some(p) = self.keys.get(path) {
            return *p;
        }
        let mut path = path;
        loop {
            if let Some(p) = self.values.get(path) {
                return *p;
            }
            match parent(path) {
                Some(up) => path = up,
                None => return (1, 1),
            }
        }
    }
}

/// `a.b[2]` → `a.b`, `a.b` → `a`, `a` → ``, `` → none.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

struct Walker<'a> {
    parser: Parser<std::str::Chars<'a>>,
    index: Index,
}

impl Walker<'_> {
    fn document(&mut self) -> Result<(), ScanError> {
        loop {
            let (event, mark) = self.parser.next_token()?;
            match event {
                Event::StreamStart | Event::DocumentStart => {}
                Event::StreamEnd | Event::DocumentEnd | Event::Nothing => return Ok(()),
                other => return self.node(other, mark, String::new()),
            }
        }
    }

    fn node(&mut self, event: Event, mark: Marker, path: String) -> Result<(), ScanError> {
        self.index.values.entry(path.clone()).or_insert(pos(mark));
        match event {
            Event::SequenceStart(..) => {
                let mut i = 0;
                loop {
                    let (event, mark) = self.parser.next_token()?;
                    if matches!(event, Event::SequenceEnd | Event::StreamEnd) {
                        return Ok(());
                    }
                    self.node(event, mark, format!("{path}[{i}]"))?;
                    i += 1;
                }
            }
            Event::MappingStart(..) => loop {
                let (key, key_mark) = self.parser.next_token()?;
                let name = match key {
                    Event::MappingEnd | Event::StreamEnd => return Ok(()),
                    Event::Scalar(name, ..) => name,
                    complex => {
                        // A non-scalar key: skip it; serde reports it.
                        self.node(complex, key_mark, format!("{path}.?"))?;
                        "?".to_owned()
                    }
                };
                let child = join(&path, &name);
                // A block mapping starts where its first key does; yaml-rust2 marks the `:` instead.
                if let Some(start) = self.index.values.get_mut(&path) {
                    *start = (*start).min(pos(key_mark));
                }
                if self.index.keys.contains_key(&child) {
                    self.index.duplicates.push((child.clone(), pos(key_mark)));
                } else {
                    self.index.keys.insert(child.clone(), pos(key_mark));
                }
                let (value, value_mark) = self.parser.next_token()?;
                self.node(value, value_mark, child)?;
            },
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let text = "a: 1\nlist:\n  - name: x\n    inner: { k: v }\n  - [1, 2]\n";
        let idx = Index::build(text);
        assert_eq!(idx.locate("a", false), (1, 4));
        assert_eq!(idx.locate("a", true), (1, 1));
        assert_eq!(idx.locate("list[0].name", false), (3, 11));
        assert_eq!(idx.locate("list[0].name", true), (3, 5));
        assert_eq!(idx.locate("list[0].inner.k", false), (4, 17));
        assert_eq!(idx.locate("list[1][1]", false), (5, 9));
        assert_eq!(idx.locate("list[0].missing", false), (3, 5));
        assert_eq!(idx.locate("nothing.here", false), (1, 1));
    }
}
