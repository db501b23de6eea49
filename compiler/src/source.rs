//! The spanned YAML front end: files and folders in, documents of positioned
//! nodes out.
//!
//! Why `saphyr` (0.3, the maintained successor of `yaml-rust`/`yaml-rust2`):
//! `serde_yaml` 0.9 is deprecated and reports positions for syntax errors
//! only, while most of our errors (an unknown `when` key, an empty value, a
//! bad CIDR) are found after parsing and must still name `file:line:column`.
//! `saphyr`'s `MarkedYaml` keeps a span on every node, map key included,
//! loads multi-document streams, reports duplicate keys with their position,
//! and is pure Rust with few dependencies. `marked-yaml` would also work, but it
//! wraps an older `yaml-rust` fork and loads one document per call; a
//! hand-written position map beside `serde_yaml` would be a parser of our own.
//! We convert the `saphyr` tree once into the small owned [`Node`] type below, so
//! the rest of the compiler never depends on the YAML crate's API, and every
//! later check reads fields through [`Fields`], which reports wrong types and
//! unknown keys with their position and field path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use crate::diagnostics::{Error, Location};

/// A YAML node with the position where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub at: Location,
}

/// A YAML value, after YAML 1.2 core-schema resolution (`80` is an integer,
/// `"80"` a string).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys in document order; duplicates are refused while loading.
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// The name of this kind of value, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }
    /// The value of a mapping entry, if this is a mapping and has the key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// One YAML document of one file.
#[derive(Debug, Clone)]
pub struct Document {
    pub file: Arc<str>,
    pub root: Node,
}

/// Parses every document of a YAML stream. Empty documents are left out.
/// `file` is the name errors will show.
pub fn parse_str(file: &str, text: &str) -> Result<Vec<Document>, Error> {
    let file: Arc<str> = Arc::from(file);
    let docs = MarkedYaml::load_from_str(text).map_err(|e| {
        let m = e.marker();
        Error::new(
            Location {
                file: file.clone(),
                line: m.line().max(1),
                column: m.col() + 1,
            },
            "",
            format!("YAML syntax error: {}", e.info()),
        )
    })?;
    let mut out = Vec::new();
    for doc in docs {
        let root = convert(&file, &doc)?;
        if !root.is_null() {
            out.push(Document {
                file: file.clone(),
                root,
            });
        }
    }
    Ok(out)
}

fn location(file: &Arc<str>, node: &MarkedYaml<'_>) -> Location {
    Location {
        file: file.clone(),
        line: node.span.start.line().max(1),
        column: node.span.start.col() + 1,
    }
}

fn convert(file: &Arc<str>, node: &MarkedYaml<'_>) -> Result<Node, Error> {
    let at = location(file, node);
    let value = match &node.data {
        YamlData::Value(s) => scalar(s),
        YamlData::Representation(s, _, _) => Value::Str(s.to_string()),
        YamlData::Sequence(items) => Value::Seq(
            items
                .iter()
                .map(|i| convert(file, i))
                .collect::<Result<_, _>>()?,
        ),
        YamlData::Mapping(map) => {
            let mut entries = Vec::with_capacity(map.len());
            for (k, v) in map {
                entries.push((convert(file, k)?, convert(file, v)?));
            }
            Value::Map(entries)
        }
        YamlData::Tagged(_, inner) => return convert(file, inner),
        YamlData::Alias(_) => {
            return Err(Error::new(at, "", "YAML aliases are not supported"));
        }
        YamlData::BadValue => {
            return Err(Error::new(at, "", "YAML syntax error: bad value"));
        }
    };
    Ok(Node { value, at })
}

fn scalar(s: &Scalar<'_>) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Int(*i),
        Scalar::FloatingPoint(f) => Value::Float(f.into_inner()),
        Scalar::String(s) => Value::Str(s.to_string()),
    }
}

/// Reads a file (its name as given is the name errors show) and parses it.
pub fn parse_file(path: &Path) -> Result<Vec<Document>, Error> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            Location {
                file: Arc::from(name.as_str()),
                line: 1,
                column: 1,
            },
            "",
            format!("cannot read file: {e}"),
        )
    })?;
    parse_str(&name, &text)
}

/// Expands each argument: a file stays as is; a folder becomes every
/// `*.yaml`/`*.yml` file under it, recursively, sorted by path.
pub fn expand_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found).map_err(|e| io_error(p, e))?;
            found.sort();
            out.extend(found);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(Error::new(
                Location {
                    file: Arc::from(p.display().to_string().as_str()),
                    line: 1,
                    column: 1,
                },
                "",
                "no such file or folder",
            ));
        }
    }
    Ok(out)
}

fn io_error(p: &Path, e: std::io::Error) -> Error {
    Error::new(
        Location {
            file: Arc::from(p.display().to_string().as_str()),
            line: 1,
            column: 1,
        },
        "",
        format!("cannot read: {e}"),
    )
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Joins a field path and a key: `spec` + `rules` → `spec.rules`.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Appends an index: `spec.rules` + 0 → `spec.rules[0]`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Collects errors while reading one document.
#[derive(Debug, Default)]
pub struct Reader {
    pub errors: Vec<Error>,
}

impl Reader {
    /// The errors in source order (line, then column), for one document.
    pub fn into_sorted(mut self) -> Vec<Error> {
        self.errors
            .sort_by_key(|e| (e.location.line, e.location.column));
        self.errors
    }

    pub fn error(&mut self, at: &Location, path: &str, message: impl Into<String>) {
        self.errors.push(Error::new(at.clone(), path, message));
    }

    /// Reads a mapping whose keys must all be among `allowed`. A null node
    /// reads as an empty mapping. Returns `None` (after reporting) when the
    /// node is not a mapping.
    pub fn fields<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
    ) -> Option<Fields<'n>> {
        match &node.value {
            Value::Null => Some(Fields {
                entries: Vec::new(),
                node,
            }),
            Value::Map(entries) => {
                let mut out = Vec::new();
                for (k, v) in entries {
                    match k.as_str() {
                        Some(key) if allowed.contains(&key) => out.push((key, v)),
                        Some(key) => {
                            let p = join(path, key);
                            self.error(&k.at, &p, format!("unknown field `{key}`"));
                        }
                        None => self.error(
                            &k.at,
                            path,
                            format!("expected a string key, found {}", k.value.kind()),
                        ),
                    }
                }
                Some(Fields { entries: out, node })
            }
            other => {
                self.error(
                    &node.at,
                    path,
                    format!("expected a mapping, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// A string scalar; reports anything else.
    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            other => {
                self.error(
                    &node.at,
                    path,
                    format!("expected a string, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// A list of strings (null reads as empty); each item with its node.
    pub fn strings<'n>(&mut self, node: &'n Node, path: &str) -> Vec<(String, &'n Node, String)> {
        let mut out = Vec::new();
        match &node.value {
            Value::Null => {}
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let p = index(path, i);
                    if let Some(s) = self.string(item, &p) {
                        out.push((s, item, p));
                    }
                }
            }
            other => self.error(
                &node.at,
                path,
                format!("expected a list of strings, found {}", other.kind()),
            ),
        }
        out
    }

    /// A list (null reads as empty).
    pub fn list<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Null => Some(&[]),
            Value::Seq(items) => Some(items),
            other => {
                self.error(
                    &node.at,
                    path,
                    format!("expected a list, found {}", other.kind()),
                );
                None
            }
        }
    }
}

/// The known fields of one mapping.
pub struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node)>,
    pub node: &'n Node,
}

impl<'n> Fields<'n> {
    /// A field's node, `None` when absent.
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }
    /// A field that is present and not null.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some_and(|n| !n.is_null())
    }
    pub fn keys(&self) -> impl Iterator<Item = &'n str> + '_ {
        self.entries.iter().map(|(k, _)| *k)
    }
}
