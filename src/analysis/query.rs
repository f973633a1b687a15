//! Detection queries: built-in ones from `queries/`, or an operator's own SQL file, each with
//! the parameters it declares.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ParamValue;

/// Built-in queries by name: `(name, file in queries/, SQL)`.
pub const BUILTIN_QUERIES: [(&str, &str, &str); 2] = [
    ("default", "queries/default.sql", include_str!("../../queries/default.sql")),
    ("reference", "queries/reference.sql", include_str!("../../queries/reference.sql")),
];

/// Parameters revokd binds itself; a query may not declare them.
const RESERVED_PARAMS: [&str; 2] = ["window_start", "window_end"];

#[derive(Debug, Clone)]
pub struct DetectionQuery {
    /// The built-in name or the file path, for messages.
    pub name: String,
    pub file: Option<PathBuf>,
    pub sql: String,
    pub declared: BTreeMap<String, ParamDecl>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParamDecl {
    pub kind: ParamType,
    pub default: ParamValue,
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Int,
    Float,
    /// A duration, written `30s`/`10m` in the config and bound as whole seconds.
    Seconds,
    Text,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("`{0}` is neither a built-in query ({1}) nor a path to a .sql file")]
    Unknown(String, String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{query}: line {line}: {message}")]
    Declaration { query: String, line: usize, message: String },
}

impl DetectionQuery {
    /// A built-in name, or a path (relative to `base`) to a `.sql` file.
    pub fn resolve(name_or_path: &str, base: &Path) -> Result<DetectionQuery, QueryError> {
        if let Some((name, _, sql)) = BUILTIN_QUERIES.iter().find(|(n, _, _)| *n == name_or_path) {
            return Self::parse(name, None, sql);
        }
        if !name_or_path.ends_with(".sql") {
            let names: Vec<&str> = BUILTIN_QUERIES.iter().map(|(n, _, _)| *n).collect();
            return Err(QueryError::Unknown(name_or_path.to_string(), names.join(", ")));
        }
        let path = base.join(name_or_path);
        let sql = std::fs::read_to_string(&path).map_err(|source| QueryError::Read { path: path.clone(), source })?;
        Self::parse(&path.display().to_string(), Some(path.clone()), &sql)
    }

    pub fn builtin(name: &str) -> DetectionQuery {
        Self::resolve(name, Path::new(".")).expect("built-in queries parse")
    }

    pub fn parse(name: &str, file: Option<PathBuf>, sql: &str) -> Result<DetectionQuery, QueryError> {
        let mut declared = BTreeMap::new();
        for (i, line) in sql.lines().enumerate() {
            let Some(decl) = line.trim_start().strip_prefix("-- @param") else { continue };
            let err = |message: String| QueryError::Declaration { query: name.to_string(), line: i + 1, message };
            let mut words = decl.split_whitespace();
            let (Some(pname), Some(kind), Some(default)) = (words.next(), words.next(), words.next()) else {
                return Err(err("expected `-- @param <name> <int|float|seconds|text> <default> <description>`".into()));
            };
            if RESERVED_PARAMS.contains(&pname) {
                return Err(err(format!("`{pname}` is bound by revokd and cannot be declared")));
            }
            if !pname.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(err(format!("`{pname}` is not a parameter name (letters, digits, _)")));
            }
            let kind = match kind {
                "int" => ParamType::Int,
                "float" => ParamType::Float,
                "seconds" => ParamType::Seconds,
                "text" => ParamType::Text,
                other => return Err(err(format!("unknown parameter type `{other}`"))),
            };
            let default = kind.parse(default).map_err(err)?;
            let description = words.collect::<Vec<_>>().join(" ");
            declared.insert(pname.to_string(), ParamDecl { kind, default, description });
        }
        Ok(DetectionQuery { name: name.to_string(), file, sql: sql.to_string(), declared })
    }

    /// Declared defaults overlaid with the config's values. Errors are `(parameter, message)`.
    pub fn bind_params(&self, overrides: &BTreeMap<String, toml::Value>) -> Result<BTreeMap<String, ParamValue>, (String, String)> {
        let mut params: BTreeMap<String, ParamValue> = self.declared.iter().map(|(k, d)| (k.clone(), d.default.clone())).collect();
        for (name, value) in overrides {
            let Some(decl) = self.declared.get(name) else {
                let known: Vec<&str> = self.declared.keys().map(String::as_str).collect();
                return Err((name.clone(), format!("query {} declares no such parameter (it declares: {})", self.name, known.join(", "))));
            };
            let bound = decl.kind.read_toml(value).map_err(|m| (name.clone(), m))?;
            params.insert(name.clone(), bound);
        }
        Ok(params)
    }
}

impl ParamType {
    fn parse(self, text: &str) -> Result<ParamValue, String> {
        let bad = || format!("`{text}` is not a valid {}", self.describe());
        Ok(match self {
            ParamType::Int => ParamValue::Int(text.parse().map_err(|_| bad())?),
            ParamType::Float => ParamValue::Float(text.parse().map_err(|_| bad())?),
            ParamType::Seconds => match text.parse::<i64>() {
                Ok(s) => ParamValue::Int(s),
                Err(_) => ParamValue::Int(crate::config::parse_duration(text).map_err(|_| bad())?.as_secs() as i64),
            },
            ParamType::Text => ParamValue::Text(text.to_string()),
        })
    }

    fn read_toml(self, value: &toml::Value) -> Result<ParamValue, String> {
        match (self, value) {
            (ParamType::Int | ParamType::Seconds, toml::Value::Integer(i)) => Ok(ParamValue::Int(*i)),
            (ParamType::Float, toml::Value::Integer(i)) => Ok(ParamValue::Float(*i as f64)),
            (ParamType::Float, toml::Value::Float(f)) => Ok(ParamValue::Float(*f)),
            (ParamType::Seconds | ParamType::Text, toml::Value::String(s)) => self.parse(s),
            (_, other) => Err(format!("expected {}, found {} `{other}`", self.describe(), other.type_str())),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            ParamType::Int => "integer",
            ParamType::Float => "number",
            ParamType::Seconds => "duration (like \"30s\" or \"10m\")",
            ParamType::Text => "string",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_are_read_from_comments() {
        let q = DetectionQuery::parse(
            "t",
            None,
            "-- @param threshold float 2.5  flag above this\n-- @param min_duration_s seconds 30s  at least\nSELECT 1",
        )
        .unwrap();
        assert_eq!(q.declared["threshold"].default, ParamValue::Float(2.5));
        assert_eq!(q.declared["threshold"].description, "flag above this");
        assert_eq!(q.declared["min_duration_s"].default, ParamValue::Int(30));
    }

    #[test]
    fn window_bounds_cannot_be_declared() {
        let err = DetectionQuery::parse("t", None, "-- @param window_end int 0 x\n").unwrap_err();
        assert!(err.to_string().contains("bound by revokd"), "{err}");
    }

    #[test]
    fn unknown_override_lists_declared_parameters() {
        let q = DetectionQuery::builtin("reference");
        let mut o = BTreeMap::new();
        o.insert("treshold".to_string(), toml::Value::Float(3.0));
        let (name, message) = q.bind_params(&o).unwrap_err();
        assert_eq!(name, "treshold");
        assert!(message.contains("threshold"), "{message}");
    }

    #[test]
    fn every_builtin_query_parses() {
        for (name, _, _) in BUILTIN_QUERIES {
            let q = DetectionQuery::builtin(name);
            assert!(!q.declared.is_empty(), "{name} declares no parameters");
        }
    }
}
