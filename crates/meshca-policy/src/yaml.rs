//! A bounded YAML (and therefore JSON) reader that keeps line numbers.
//!
//! Text is parsed with `saphyr-parser`'s event stream into a small [`Node`] tree. Every limit is
//! checked while events arrive, so hostile input (huge, deeply nested, alias bombs, many documents)
//! ends in an error, never a panic or unbounded memory.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Limits for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Input size in bytes.
    pub max_bytes: usize,
    /// Nesting depth of collections.
    pub max_depth: usize,
    /// Documents in one file.
    pub max_documents: usize,
    /// Nodes in one file, aliases expanded.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 16 * 1024 * 1024, max_depth: 64, max_documents: 10_000, max_nodes: 2_000_000 }
    }
}

/// A parsed YAML node with its 1-based line.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: u32,
    pub value: Value,
}

/// The value of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// A scalar; `plain` is false for quoted or block scalars and `!!str`-tagged ones.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Keys are scalars (checked while parsing); each entry keeps the key's line.
    Map(Vec<(String, u32, Node)>),
}

impl Node {
    fn size(&self) -> usize {
        match &self.value {
            Value::Null | Value::Scalar { .. } => 1,
            Value::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Value::Map(entries) => 1 + entries.iter().map(|(_, _, v)| 1 + v.size()).sum::<usize>(),
        }
    }

    /// The entry of a mapping with this key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _, _)| k == key).map(|(_, _, v)| v),
            _ => None,
        }
    }

    /// The text of a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A short name of the node's type for messages.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The node as JSON: plain scalars become booleans, numbers or null where YAML 1.2's core
    /// schema says so; other scalars are strings.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Scalar { text, plain } => {
                if !*plain {
                    return J::String(text.clone());
                }
                plain_scalar_json(text)
            }
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => {
                J::Object(entries.iter().map(|(k, _, v)| (k.clone(), v.to_json())).collect::<serde_json::Map<_, _>>())
            }
        }
    }
}

/// YAML 1.2 core-schema typing of a plain scalar.
pub fn plain_scalar_json(text: &str) -> serde_json::Value {
    use serde_json::Value as J;
    match text {
        "true" | "True" | "TRUE" => return J::Bool(true),
        "false" | "False" | "FALSE" => return J::Bool(false),
        "" | "~" | "null" | "Null" | "NULL" => return J::Null,
        _ => {}
    }
    let looks_numeric = text.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'-' || b == b'+' || b == b'.');
    if looks_numeric {
        if let Ok(i) = text.parse::<i64>() {
            return J::from(i);
        }
        if text.bytes().any(|b| b.is_ascii_digit()) && !text.contains(['_', ':']) {
            if let Ok(f) = text.parse::<f64>() {
                if f.is_finite() {
                    if let Some(n) = serde_json::Number::from_f64(f) {
                        return J::Number(n);
                    }
                }
            }
        }
    }
    J::String(text.to_string())
}

/// A YAML syntax or limit error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: u32,
    pub message: String,
}

enum Frame {
    Seq { line: u32, anchor: usize, items: Vec<Node> },
    Map { line: u32, anchor: usize, entries: Vec<(String, u32, Node)>, key: Option<(String, u32)> },
}

struct Builder {
    limits: Limits,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    docs: Vec<Node>,
    current: Option<Node>,
}

fn line_of(span: &saphyr_parser::Span) -> u32 {
    u32::try_from(span.start.line()).unwrap_or(u32::MAX).max(1)
}

impl Builder {
    fn count(&mut self, n: usize, line: u32) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > self.limits.max_nodes {
            return Err(YamlError { line, message: format!("too many nodes (limit {})", self.limits.max_nodes) });
        }
        Ok(())
    }

    fn push_frame(&mut self, frame: Frame, line: u32) -> Result<(), YamlError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(YamlError { line, message: format!("nesting too deep (limit {})", self.limits.max_depth) });
        }
        self.stack.push(frame);
        Ok(())
    }

    fn complete(&mut self, node: Node, anchor: usize) -> Result<(), YamlError> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.current = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    let k = match node.value {
                        Value::Scalar { text, .. } => text,
                        Value::Null => String::new(),
                        _ => {
                            return Err(YamlError {
                                line: node.line,
                                message: "mapping keys must be scalars".to_string(),
                            })
                        }
                    };
                    if entries.iter().any(|(e, _, _)| *e == k) {
                        return Err(YamlError { line: node.line, message: format!("duplicate key {k:?}") });
                    }
                    *key = Some((k, node.line));
                }
                Some((k, kline)) => entries.push((k, kline, node)),
            },
        }
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, line: u32) -> Result<(), YamlError> {
        match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
            Event::DocumentStart(_) => self.current = None,
            Event::DocumentEnd => {
                if let Some(doc) = self.current.take() {
                    if self.docs.len() >= self.limits.max_documents {
                        return Err(YamlError {
                            line,
                            message: format!("too many documents (limit {})", self.limits.max_documents),
                        });
                    }
                    self.docs.push(doc);
                }
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id) else {
                    return Err(YamlError { line, message: "alias to an unknown anchor".to_string() });
                };
                if self.nodes.saturating_add(node.size()) > self.limits.max_nodes {
                    return Err(YamlError {
                        line,
                        message: format!("too many nodes (limit {})", self.limits.max_nodes),
                    });
                }
                let mut node = node.clone();
                self.count(node.size(), line)?;
                node.line = line;
                self.complete(node, 0)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, line)?;
                let tagged_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let plain = style == ScalarStyle::Plain && !tagged_str;
                let value = if plain && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL") {
                    Value::Null
                } else {
                    Value::Scalar { text: text.into_owned(), plain }
                };
                self.complete(Node { line, value }, anchor)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.count(1, line)?;
                self.push_frame(Frame::Seq { line, anchor, items: Vec::new() }, line)?;
            }
            Event::MappingStart(anchor, _) => {
                self.count(1, line)?;
                self.push_frame(Frame::Map { line, anchor, entries: Vec::new(), key: None }, line)?;
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq { line, anchor, items }) => {
                    self.complete(Node { line, value: Value::Seq(items) }, anchor)?
                }
                _ => return Err(YamlError { line, message: "unbalanced sequence".to_string() }),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map { line, anchor, entries, .. }) => {
                    self.complete(Node { line, value: Value::Map(entries) }, anchor)?
                }
                _ => return Err(YamlError { line, message: "unbalanced mapping".to_string() }),
            },
        }
        Ok(())
    }
}

/// Parses every document of `text`. Empty documents are skipped.
pub fn parse_documents(text: &str, limits: Limits) -> Result<Vec<Node>, YamlError> {
    if text.len() > limits.max_bytes {
        return Err(YamlError {
            line: 1,
            message: format!("input too large ({} bytes, limit {})", text.len(), limits.max_bytes),
        });
    }
    let mut b =
        Builder { limits, stack: Vec::new(), anchors: HashMap::new(), nodes: 0, docs: Vec::new(), current: None };
    for item in Parser::new_from_str(text) {
        match item {
            Ok((event, span)) => b.event(event, line_of(&span))?,
            Err(e) => {
                let line = u32::try_from(e.marker().line()).unwrap_or(u32::MAX).max(1);
                return Err(YamlError { line, message: format!("invalid YAML: {}", e.info()) });
            }
        }
    }
    Ok(b.docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_types() {
        let docs = parse_documents("a: 1\nb:\n  - x\n  - 'y'\n---\n[1, true, ~]\n", Limits::default()).unwrap();
        assert_eq!(docs.len(), 2);
        let b = docs[0].get("b").unwrap();
        assert_eq!(b.line, 3);
        assert_eq!(docs[0].to_json(), serde_json::json!({"a": 1, "b": ["x", "y"]}));
        assert_eq!(docs[1].to_json(), serde_json::json!([1, true, null]));
    }

    #[test]
    fn limits() {
        let deep = "[".repeat(100_000);
        let e = parse_documents(&deep, Limits::default()).unwrap_err();
        assert!(e.message.contains("nesting") || e.message.contains("recursion"), "{e:?}");
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
        assert!(parse_documents(bomb, Limits::default()).unwrap_err().message.contains("too many nodes"));
        let small = Limits { max_bytes: 10, ..Limits::default() };
        assert!(parse_documents("a: 123456789", small).unwrap_err().message.contains("too large"));
        assert!(parse_documents("a: 1\na: 2\n", Limits::default()).unwrap_err().message.contains("duplicate"));
    }
}
