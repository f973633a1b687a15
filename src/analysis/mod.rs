//! Analysis: runs a detection query (SQL from `queries/`, or the operator's own file) over the
//! `requests` table in DataFusion and turns its rows into scored sessions.
//!
//! A query declares its parameters in comment lines
//! `-- @param <name> <int|float|seconds|text> <default>  <description>`; revokd binds them
//! (defaults overlaid with `[detection.params]`) as `$name` placeholders, together with
//! `$window_start` and `$window_end` (epoch seconds, end exclusive). Values never become SQL
//! text.
//!
//! A query must return one row per session with the columns of [`REQUIRED_COLUMNS`]; every
//! other numeric column is reported as a named signal of the decision.
//!
//! A query file may hold several statements: all but the last are `CREATE TABLE name AS
//! SELECT …`, run in order, and materialise intermediate results the last one reads more than
//! once (DataFusion inlines a CTE at every reference, recomputing it each time). The last
//! statement returns the sessions.

mod key64;
mod query;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::DFParser;

pub use query::{DetectionQuery, ParamDecl, ParamType, QueryError, BUILTIN_QUERIES};

use crate::source::{Window, REQUESTS_SCHEMA};

/// The query used when the config names none.
pub const DEFAULT_QUERY: &str = "default";

/// Columns every detection query must return, with what they mean.
pub const REQUIRED_COLUMNS: [(&str, &str); 4] = [
    ("session_id", "text: the session"),
    ("score", "number: how strongly the session looks shared (NULL when not scored)"),
    ("flagged", "boolean: whether to revoke the session"),
    ("reasons", "text (`; `-separated) or list of text: why, with values and thresholds"),
];

#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Int(i64),
    Float(f64),
    Text(String),
}

impl ParamValue {
    fn to_scalar(&self) -> ScalarValue {
        match self {
            ParamValue::Int(i) => ScalarValue::Int64(Some(*i)),
            ParamValue::Float(f) => ScalarValue::Float64(Some(*f)),
            ParamValue::Text(s) => ScalarValue::Utf8(Some(s.clone())),
        }
    }
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// `edge_locations (code, city, country_code, latitude, longitude)`: where CloudFront edges
/// are, by the three letters that start `x-edge-location`.
fn edge_table() -> datafusion::error::Result<Arc<MemTable>> {
    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    let edges = &*crate::geo::EDGES;
    let schema = Arc::new(Schema::new(vec![
        Field::new("code", DataType::Utf8, false),
        Field::new("city", DataType::Utf8, false),
        Field::new("country_code", DataType::Utf8, false),
        Field::new("latitude", DataType::Float64, false),
        Field::new("longitude", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(edges.iter().map(|e| e.code.as_str()))),
            Arc::new(StringArray::from_iter_values(edges.iter().map(|e| e.city.as_str()))),
            Arc::new(StringArray::from_iter_values(edges.iter().map(|e| e.country_code.as_str()))),
            Arc::new(Float64Array::from_iter_values(edges.iter().map(|e| e.latitude))),
            Arc::new(Float64Array::from_iter_values(edges.iter().map(|e| e.longitude))),
        ],
    )?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("detection query {query}: {source}")]
    Query {
        query: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    #[error("detection query {query} does not return the column `{column}` ({meaning})")]
    MissingColumn {
        query: String,
        column: &'static str,
        meaning: &'static str,
    },
    #[error("detection query {query}: column `{column}` is {found}, expected {expected}")]
    ColumnType {
        query: String,
        column: String,
        found: DataType,
        expected: &'static str,
    },
    #[error("detection query {query} holds no SQL statement")]
    Empty { query: String },
    #[error("detection query {query}: only `CREATE TABLE name AS SELECT …` may come before the last statement, found: {statement}")]
    NotCreateTable { query: String, statement: String },
}

/// One session as the detection query judged it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SessionScore {
    pub session_id: String,
    pub score: Option<f64>,
    pub flagged: bool,
    pub reasons: Vec<String>,
    /// Every other numeric column of the query's result, by name.
    pub signals: BTreeMap<String, f64>,
}

/// The sessions an analysis kept, and how many it scored in all.
#[derive(Debug)]
pub struct Analysed {
    pub scores: Vec<SessionScore>,
    pub sessions: u64,
}

/// One signal of a decision: its value, the threshold it is measured against, and what it
/// added to the score. From the optional output convention `x`, `x_threshold`, `x_score`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SignalRow {
    pub name: String,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub contribution: f64,
}

impl SessionScore {
    /// The decision threshold the query reports (its optional `threshold` column).
    pub fn threshold(&self) -> Option<f64> {
        self.signals.get("threshold").copied()
    }

    /// Signals that contribute to the score (those with an `x_score` column), strongest first.
    pub fn signal_rows(&self) -> Vec<SignalRow> {
        let mut rows: Vec<SignalRow> = self
            .signals
            .iter()
            .filter_map(|(name, contribution)| {
                let base = name.strip_suffix("_score")?;
                Some(SignalRow {
                    name: base.to_string(),
                    value: self.signals.get(base).copied(),
                    threshold: self.signals.get(&format!("{base}_threshold")).copied(),
                    contribution: *contribution,
                })
            })
            .collect();
        rows.sort_by(|a, b| b.contribution.total_cmp(&a.contribution).then_with(|| a.name.cmp(&b.name)));
        rows
    }

    /// The other numeric columns: context that does not enter the score.
    pub fn other_signals(&self) -> BTreeMap<String, f64> {
        let rows = self.signal_rows();
        let part_of_a_row = |name: &str| {
            rows.iter().any(|r| name == r.name || name == format!("{}_score", r.name) || name == format!("{}_threshold", r.name))
        };
        self.signals
            .iter()
            .filter(|(name, _)| name.as_str() != "threshold" && !part_of_a_row(name))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

pub struct Analyzer {
    query: DetectionQuery,
    params: BTreeMap<String, ParamValue>,
    partitions: usize,
}

impl Analyzer {
    pub fn new(query: DetectionQuery, params: BTreeMap<String, ParamValue>) -> Self {
        let partitions = std::thread::available_parallelism().map_or(2, |n| n.get());
        Analyzer { query, params, partitions }
    }

    pub fn query(&self) -> &DetectionQuery {
        &self.query
    }

    pub fn params(&self) -> &BTreeMap<String, ParamValue> {
        &self.params
    }

    fn context(&self, batches: Vec<RecordBatch>) -> Result<SessionContext, AnalysisError> {
        let mut config = SessionConfig::new().with_target_partitions(self.partitions);
        // A run plans every statement anew, and on a scheduled run's 10 minutes of logs the
        // planning is a good part of the run. Without the second and third optimiser passes the
        // shipped queries give the same results at the same cold-run speed, and each
        // incremental run takes ~30 ms less.
        config.options_mut().optimizer.max_passes = 1;
        let ctx = SessionContext::new_with_config(config);
        // Spread batches over partitions so the scan runs on every core.
        let mut partitions = vec![Vec::new(); self.partitions.max(1)];
        for (i, batch) in batches.into_iter().enumerate() {
            partitions[i % self.partitions.max(1)].push(batch);
        }
        let table = MemTable::try_new(REQUESTS_SCHEMA.clone(), partitions).map_err(|e| self.err(e))?;
        ctx.register_table("requests", Arc::new(table)).map_err(|e| self.err(e))?;
        ctx.register_table("edge_locations", edge_table().map_err(|e| self.err(e))?)
            .map_err(|e| self.err(e))?;
        ctx.register_udf(key64::key64_udf());
        Ok(ctx)
    }

    fn err(&self, source: datafusion::error::DataFusionError) -> AnalysisError {
        AnalysisError::Query { query: self.query.name.clone(), source }
    }

    fn bound(&self, window: &Window) -> Vec<(String, ScalarValue)> {
        let mut values: Vec<(String, ScalarValue)> =
            self.params.iter().map(|(k, v)| (k.clone(), v.to_scalar())).collect();
        values.push(("window_start".into(), ScalarValue::Int64(Some(window.start.timestamp()))));
        values.push(("window_end".into(), ScalarValue::Int64(Some(window.end.timestamp()))));
        values
    }

    /// Plans the query against an empty `requests` table and checks its result columns, so a
    /// broken query is found by `check-config`, not by the first scheduled run.
    pub async fn validate(&self) -> Result<(), AnalysisError> {
        let ctx = self.context(Vec::new())?;
        let window = Window { start: chrono::DateTime::UNIX_EPOCH, end: chrono::DateTime::UNIX_EPOCH };
        let df = self.prepare(&ctx, &window, false).await?;
        let schema = df.schema().as_arrow().clone();
        self.check_columns(&schema)?;
        // Execute too: some errors (types of bound values) only surface then.
        df.collect().await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Runs the query's leading `CREATE TABLE … AS` statements, then plans the last one (as
    /// EXPLAIN ANALYZE when `explain`), every statement with the parameters bound.
    async fn prepare(&self, ctx: &SessionContext, window: &Window, explain: bool) -> Result<DataFrame, AnalysisError> {
        let mut statements = DFParser::parse_sql(&self.query.sql).map_err(|e| self.err(e))?;
        // The tables each statement reads, to let go of those no later statement needs.
        let reads: Vec<HashSet<String>> = statements
            .iter()
            .map(|statement| {
                let refs = ctx.state().resolve_table_references(statement)?;
                Ok(refs.iter().map(|r| r.table().to_string()).collect())
            })
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        let Some(last) = statements.pop_back() else {
            return Err(AnalysisError::Empty { query: self.query.name.clone() });
        };
        let mut releasable = vec!["requests".to_string()];
        for (number, statement) in statements.into_iter().enumerate() {
            let started = std::time::Instant::now();
            let plan = ctx.state().statement_to_plan(statement).await.map_err(|e| self.err(e))?;
            use datafusion::logical_expr::{DdlStatement, LogicalPlan};
            let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) = &plan else {
                return Err(AnalysisError::NotCreateTable { query: self.query.name.clone(), statement: plan.display().to_string() });
            };
            releasable.push(create.name.table().to_string());
            let plan = plan.with_param_values(self.bound(window)).map_err(|e| self.err(e))?;
            ctx.execute_logical_plan(plan).await.map_err(|e| self.err(e))?.collect().await.map_err(|e| self.err(e))?;
            tracing::debug!(query = %self.query.name, statement = number + 1, elapsed_ms = started.elapsed().as_millis() as u64, "materialised");
            // The parsed logs (or an earlier table) stay in memory only while a statement
            // still to run reads them: that halves the peak memory of the default query.
            let before = releasable.len();
            releasable.retain(|table| {
                let needed = reads[number + 1..].iter().any(|r| r.contains(table));
                if !needed {
                    let _ = ctx.deregister_table(table.as_str());
                }
                needed
            });
            if releasable.len() < before {
                crate::memory::return_freed_memory();
            }
        }
        let mut plan = ctx.state().statement_to_plan(last).await.map_err(|e| self.err(e))?;
        if explain {
            plan = datafusion::logical_expr::LogicalPlanBuilder::from(plan)
                .explain(false, true)
                .and_then(|b| b.build())
                .map_err(|e| self.err(e))?;
        }
        let plan = plan.with_param_values(self.bound(window)).map_err(|e| self.err(e))?;
        ctx.execute_logical_plan(plan).await.map_err(|e| self.err(e))
    }

    fn check_columns(&self, schema: &arrow::datatypes::Schema) -> Result<(), AnalysisError> {
        for (column, meaning) in REQUIRED_COLUMNS {
            if schema.field_with_name(column).is_err() {
                return Err(AnalysisError::MissingColumn { query: self.query.name.clone(), column, meaning });
            }
        }
        let type_err = |column: &str, found: &DataType, expected| AnalysisError::ColumnType {
            query: self.query.name.clone(),
            column: column.to_string(),
            found: found.clone(),
            expected,
        };
        let flagged = schema.field_with_name("flagged").expect("checked").data_type();
        if flagged != &DataType::Boolean {
            return Err(type_err("flagged", flagged, "boolean"));
        }
        let score = schema.field_with_name("score").expect("checked").data_type();
        if !score.is_numeric() && score != &DataType::Null {
            return Err(type_err("score", score, "a number"));
        }
        Ok(())
    }

    /// Scores every session in the window.
    pub async fn analyse(&self, batches: Vec<RecordBatch>, window: &Window) -> Result<Vec<SessionScore>, AnalysisError> {
        Ok(self.analyse_where(batches, window, |_, _| true).await?.scores)
    }

    /// Scores every session in the window, but returns only those `keep(session_id, flagged)`
    /// selects. A run needs the flagged few of thousands of sessions, and turning a result
    /// row into a score (its reasons, every signal by name) cost as much as planning a
    /// statement (~15 ms of an incremental run, callgrind).
    pub async fn analyse_where(
        &self,
        batches: Vec<RecordBatch>,
        window: &Window,
        keep: impl Fn(&str, bool) -> bool,
    ) -> Result<Analysed, AnalysisError> {
        let ctx = self.context(batches)?;
        let df = self.prepare(&ctx, window, false).await?;
        self.check_columns(df.schema().as_arrow())?;
        let results = df.collect().await.map_err(|e| self.err(e))?;
        let mut scores = Vec::new();
        let mut sessions = 0;
        for batch in &results {
            sessions += self.convert(batch, &keep, &mut scores)?;
        }
        // Deterministic order: highest score first, then id.
        scores.sort_by(|a, b| {
            b.score
                .unwrap_or(f64::NEG_INFINITY)
                .total_cmp(&a.score.unwrap_or(f64::NEG_INFINITY))
                .then_with(|| a.session_id.cmp(&b.session_id))
        });
        Ok(Analysed { scores, sessions })
    }

    /// Runs the query and returns DataFusion's EXPLAIN ANALYZE: each operator with its rows
    /// and time, to see where a query spends its time before optimising it.
    pub async fn explain_analyze(&self, batches: Vec<RecordBatch>, window: &Window) -> Result<String, AnalysisError> {
        let ctx = self.context(batches)?;
        let df = self.prepare(&ctx, window, true).await?;
        let batches = df.collect().await.map_err(|e| self.err(e))?;
        // Rows of (plan_type, plan): the plan with metrics is the text in the second column.
        let mut text = String::new();
        for batch in &batches {
            let plans = cast(batch.column(1), &DataType::Utf8).map_err(|e| self.err(e.into()))?;
            for plan in plans.as_string::<i32>().iter().flatten() {
                text.push_str(plan);
                text.push('\n');
            }
        }
        Ok(text)
    }

    /// Adds the rows `keep` selects to `out`; returns how many sessions the batch holds.
    fn convert(&self, batch: &RecordBatch, keep: &impl Fn(&str, bool) -> bool, out: &mut Vec<SessionScore>) -> Result<u64, AnalysisError> {
        let schema = batch.schema();
        let column = |name: &str| batch.column(schema.index_of(name).expect("checked"));
        let cast_to = |name: &str, to: &DataType, expected| {
            cast(column(name), to).map_err(|_| AnalysisError::ColumnType {
                query: self.query.name.clone(),
                column: name.to_string(),
                found: column(name).data_type().clone(),
                expected,
            })
        };
        let ids = cast_to("session_id", &DataType::Utf8, "text")?;
        let ids = ids.as_string::<i32>();
        let score = cast_to("score", &DataType::Float64, "a number")?;
        let score = score.as_primitive::<Float64Type>();
        let flagged = column("flagged").as_boolean();
        let reasons = column("reasons");
        let reasons_text = match reasons.data_type() {
            DataType::List(_) | DataType::LargeList(_) | DataType::ListView(_) => None,
            _ => Some(cast_to("reasons", &DataType::Utf8, "text or a list of text")?),
        };
        let reasons_list = match reasons.data_type() {
            DataType::List(_) | DataType::LargeList(_) | DataType::ListView(_) => Some(
                cast_to(
                    "reasons",
                    &DataType::List(Arc::new(arrow::datatypes::Field::new_list_field(DataType::Utf8, true))),
                    "text or a list of text",
                )?,
            ),
            _ => None,
        };
        let mut signals = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            let name = field.name().as_str();
            if REQUIRED_COLUMNS.iter().any(|(c, _)| *c == name) {
                continue;
            }
            if field.data_type().is_numeric() {
                let values = cast(batch.column(i), &DataType::Float64).map_err(|e| self.err(e.into()))?;
                signals.push((name.to_string(), values));
            }
        }
        let mut sessions = 0;
        for row in 0..batch.num_rows() {
            if ids.is_null(row) {
                continue;
            }
            sessions += 1;
            let is_flagged = flagged.is_valid(row) && flagged.value(row);
            if !keep(ids.value(row), is_flagged) {
                continue;
            }
            let reasons = if let Some(text) = &reasons_text {
                let text = text.as_string::<i32>();
                if text.is_null(row) {
                    Vec::new()
                } else {
                    text.value(row).split("; ").filter(|s| !s.is_empty()).map(str::to_string).collect()
                }
            } else if let Some(list) = &reasons_list {
                let list = list.as_list::<i32>();
                if list.is_null(row) {
                    Vec::new()
                } else {
                    let items = list.value(row);
                    let items = items.as_string::<i32>();
                    (0..items.len()).filter(|&i| items.is_valid(i)).map(|i| items.value(i).to_string()).collect()
                }
            } else {
                Vec::new()
            };
            let signals = signals
                .iter()
                .filter_map(|(name, values)| {
                    let values = values.as_primitive::<Float64Type>();
                    values.is_valid(row).then(|| (name.clone(), values.value(row)))
                })
                .collect();
            out.push(SessionScore {
                session_id: ids.value(row).to_string(),
                score: score.is_valid(row).then(|| score.value(row)),
                flagged: is_flagged,
                reasons,
                signals,
            });
        }
        Ok(sessions)
    }
}
