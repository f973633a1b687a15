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
//! SELECT …` (each name new), run in order, and materialise intermediate results the last one reads more than
//! once (DataFusion inlines a CTE at every reference, recomputing it each time). The last
//! statement returns the sessions.

mod distinct_values;
mod key64;
mod median;
mod query;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::DFParser;

pub use query::{BUILTIN_QUERIES, DetectionQuery, ParamDecl, ParamType, QueryError};

use crate::source::{REQUESTS_SCHEMA, Window};

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
    MissingColumn { query: String, column: &'static str, meaning: &'static str },
    #[error("detection query {query}: column `{column}` is {found}, expected {expected}")]
    ColumnType { query: String, column: String, found: DataType, expected: &'static str },
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
        self.signals.iter().filter(|(name, _)| name.as_str() != "threshold" && !part_of_a_row(name)).map(|(k, v)| (k.clone(), *v)).collect()
    }
}

#[derive(Clone)]
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

    /// A session whose `requests` table (and every table a statement creates) exists but is
    /// empty: the query is planned against the schemas and the tables filled later.
    fn context(&self) -> Result<(SessionContext, Arc<MemTable>), AnalysisError> {
        let mut config = SessionConfig::new().with_target_partitions(self.partitions);
        // A run plans every statement anew, and on a scheduled run's 10 minutes of logs the
        // planning is a good part of the run. Without the second and third optimiser passes the
        // shipped queries give the same results at the same cold-run speed, and each
        // incremental run takes ~30 ms less.
        config.options_mut().optimizer.max_passes = 1;
        // DataFusion aggregates each partition before repartitioning, and gives that up when
        // it hardly reduces the rows, but decides only after 100,000 rows of a partition: a
        // scheduled run's partitions hold ~120,000 rows, so grouping fetches by (session,
        // segment, address) was done twice for 4 % fewer rows. Deciding after 10,000 rows:
        // incremental run ~3 % fewer instructions, ~7 % faster; cold hour as fast.
        config.options_mut().execution.skip_partial_aggregation_probe_rows_threshold = 10_000;
        let ctx = SessionContext::new_with_config(config);
        let requests = self.empty_table(REQUESTS_SCHEMA.clone())?;
        ctx.register_table("requests", requests.clone()).map_err(|e| self.err(e))?;
        ctx.register_table("edge_locations", edge_table().map_err(|e| self.err(e))?).map_err(|e| self.err(e))?;
        ctx.register_udf(key64::key64_udf());
        ctx.register_udaf(median::median_udaf());
        ctx.register_udaf(distinct_values::distinct_values_udaf());
        Ok((ctx, requests))
    }

    /// One partition per core, so a scan runs on every core.
    fn empty_table(&self, schema: arrow::datatypes::SchemaRef) -> Result<Arc<MemTable>, AnalysisError> {
        let partitions = vec![Vec::new(); self.partitions.max(1)];
        Ok(Arc::new(MemTable::try_new(schema, partitions).map_err(|e| self.err(e))?))
    }

    fn err(&self, source: datafusion::error::DataFusionError) -> AnalysisError {
        AnalysisError::Query { query: self.query.name.clone(), source }
    }

    fn bound(&self, window: &Window) -> Vec<(String, ScalarValue)> {
        let mut values: Vec<(String, ScalarValue)> = self.params.iter().map(|(k, v)| (k.clone(), v.to_scalar())).collect();
        values.push(("window_start".into(), ScalarValue::Int64(Some(window.start.timestamp()))));
        values.push(("window_end".into(), ScalarValue::Int64(Some(window.end.timestamp()))));
        values
    }

    /// Plans the query against an empty `requests` table and checks its result columns, so a
    /// broken query is found by `check-config`, not by the first scheduled run.
    pub async fn validate(&self) -> Result<(), AnalysisError> {
        let window = Window { start: chrono::DateTime::UNIX_EPOCH, end: chrono::DateTime::UNIX_EPOCH };
        // Execute too: some errors (types of bound values) only surface then.
        self.plan(&window).await?.analyse_where(Vec::new(), |_, _| true).await?;
        Ok(())
    }

    /// Plans every statement of the query for `window`, with its parameters bound, before
    /// any log is read: parsing SQL and optimising the logical plans need only the tables'
    /// schemas, and take ~135 M of a scheduled run's ~3.4 G instructions, all on one core
    /// (callgrind). A run plans while it reads. The physical plans wait for the data:
    /// DataFusion chooses joins by the tables' sizes.
    ///
    /// Each leading `CREATE TABLE … AS` statement becomes its input query and an empty table
    /// of that query's schema for later statements to read.
    pub async fn plan(&self, window: &Window) -> Result<PlannedAnalysis, AnalysisError> {
        use datafusion::logical_expr::{DdlStatement, LogicalPlan};
        let (ctx, requests) = self.context()?;
        // Shares `ctx`'s catalog: it sees the tables registered below.
        let state = ctx.state();
        let mut statements = DFParser::parse_sql(&self.query.sql).map_err(|e| self.err(e))?;
        // The tables each statement reads, to let go of those no later statement needs.
        let reads: Vec<HashSet<String>> = statements
            .iter()
            .map(|statement| {
                let refs = state.resolve_table_references(statement)?;
                Ok(refs.iter().map(|r| r.table().to_string()).collect())
            })
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        let Some(last) = statements.pop_back() else {
            return Err(AnalysisError::Empty { query: self.query.name.clone() });
        };
        // Parameters bound, then optimised once: execution plans these as they are.
        let bind = |plan: LogicalPlan| -> Result<LogicalPlan, AnalysisError> {
            let plan = plan.with_param_values(self.bound(window)).map_err(|e| self.err(e))?;
            state.optimize(&plan).map_err(|e| self.err(e))
        };
        let mut held = vec![("requests".to_string(), requests.clone())];
        let mut steps = Vec::new();
        for (number, statement) in statements.into_iter().enumerate() {
            let plan = state.statement_to_plan(statement).await.map_err(|e| self.err(e))?;
            let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) = plan else {
                return Err(AnalysisError::NotCreateTable { query: self.query.name.clone(), statement: plan.display().to_string() });
            };
            let input = bind(Arc::unwrap_or_clone(create.input))?;
            let table = self.empty_table(Arc::clone(input.schema().inner()))?;
            let name = create.name.table().to_string();
            // Registering would replace the table silently, and statements planned before
            // would still read the old one.
            if ctx.table_exist(name.as_str()).map_err(|e| self.err(e))? {
                return Err(self.err(datafusion::error::DataFusionError::Plan(format!(
                    "statement {}: table `{name}` exists already; each CREATE TABLE needs a name of its own",
                    number + 1
                ))));
            }
            ctx.register_table(name.as_str(), table.clone()).map_err(|e| self.err(e))?;
            held.push((name.clone(), table.clone()));
            // The parsed logs (or an earlier table) stay in memory only while a statement
            // still to run reads them: that halves the peak memory of the default query.
            let (needed, release): (Vec<_>, Vec<_>) =
                held.into_iter().partition(|(name, _)| reads[number + 1..].iter().any(|r| r.contains(name)));
            held = needed;
            steps.push(Materialise { name, plan: input, table, release: release.into_iter().map(|(_, t)| t).collect() });
        }
        let result = bind(state.statement_to_plan(last).await.map_err(|e| self.err(e))?)?;
        self.check_columns(result.schema().as_arrow())?;
        Ok(PlannedAnalysis { query: self.query.name.clone(), ctx, requests, steps, result })
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
        Ok(self.plan(window).await?.analyse_where(batches, |_, _| true).await?.scores)
    }

    /// Runs the query and returns, for every statement, its physical plan with each
    /// operator's rows and time (as EXPLAIN ANALYZE shows them), to see where a query spends
    /// its time before optimising it.
    pub async fn explain_analyze(&self, batches: Vec<RecordBatch>, window: &Window) -> Result<String, AnalysisError> {
        let mut text = String::new();
        self.plan(window).await?.execute(batches, Some(&mut text)).await?;
        Ok(text)
    }
}

/// A `CREATE TABLE … AS` statement, planned: its query, the table it fills, and the tables
/// no later statement reads once it has run.
struct Materialise {
    name: String,
    plan: datafusion::logical_expr::LogicalPlan,
    table: Arc<MemTable>,
    release: Vec<Arc<MemTable>>,
}

/// A detection query planned for one window, waiting for its logs ([`Analyzer::plan`]).
pub struct PlannedAnalysis {
    query: String,
    ctx: SessionContext,
    requests: Arc<MemTable>,
    steps: Vec<Materialise>,
    result: datafusion::logical_expr::LogicalPlan,
}

impl PlannedAnalysis {
    fn err(&self, source: datafusion::error::DataFusionError) -> AnalysisError {
        AnalysisError::Query { query: self.query.clone(), source }
    }

    /// Runs the planned statements over `batches` and returns the last one's rows; with
    /// `profile`, appends each statement's physical plan with its operators' metrics.
    async fn execute(&self, batches: Vec<RecordBatch>, mut profile: Option<&mut String>) -> Result<Vec<RecordBatch>, AnalysisError> {
        // Batches spread over the partitions, so the scan runs on every core.
        fill(&self.requests, batches.into_iter().map(|batch| vec![batch]).collect()).await;
        let state = self.ctx.state();
        let mut profile_plan =
            |number: usize, name: &str, physical: &dyn datafusion::physical_plan::ExecutionPlan, elapsed: std::time::Duration| {
                if let Some(text) = profile.as_deref_mut() {
                    let operators = datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(physical).indent(true);
                    text.push_str(&format!("-- statement {number} ({name}): {:.1} ms\n{operators}\n", elapsed.as_secs_f64() * 1e3));
                }
            };
        for (number, step) in (1..).zip(&self.steps) {
            let started = std::time::Instant::now();
            // Optimised already: `collect` on a DataFrame would optimise the plan again.
            let physical = state.query_planner().create_physical_plan(&step.plan, &state).await.map_err(|e| self.err(e))?;
            let rows = datafusion::physical_plan::collect_partitioned(physical.clone(), state.task_ctx()).await.map_err(|e| self.err(e))?;
            fill(&step.table, rows).await;
            tracing::debug!(query = %self.query, statement = number, elapsed_ms = started.elapsed().as_millis() as u64, "materialised");
            profile_plan(number, &step.name, physical.as_ref(), started.elapsed());
            // The plan holds the batches it read: they are freed only once it is gone.
            drop(physical);
            for table in &step.release {
                fill(table, Vec::new()).await;
            }
            if !step.release.is_empty() {
                crate::memory::return_freed_memory();
            }
        }
        let started = std::time::Instant::now();
        let physical = state.query_planner().create_physical_plan(&self.result, &state).await.map_err(|e| self.err(e))?;
        let rows = datafusion::physical_plan::collect(physical.clone(), state.task_ctx()).await.map_err(|e| self.err(e))?;
        profile_plan(self.steps.len() + 1, "result", physical.as_ref(), started.elapsed());
        Ok(rows)
    }

    /// Scores every session in the window, but returns only those `keep(session_id, flagged)`
    /// selects. A run needs the flagged few of thousands of sessions, and turning a result
    /// row into a score (its reasons, every signal by name) cost as much as planning a
    /// statement (~15 ms of an incremental run, callgrind).
    pub async fn analyse_where(self, batches: Vec<RecordBatch>, keep: impl Fn(&str, bool) -> bool) -> Result<Analysed, AnalysisError> {
        let results = self.execute(batches, None).await?;
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

    /// Adds the rows `keep` selects to `out`; returns how many sessions the batch holds.
    fn convert(&self, batch: &RecordBatch, keep: &impl Fn(&str, bool) -> bool, out: &mut Vec<SessionScore>) -> Result<u64, AnalysisError> {
        let schema = batch.schema();
        let column = |name: &str| batch.column(schema.index_of(name).expect("checked"));
        let cast_to = |name: &str, to: &DataType, expected| {
            cast(column(name), to).map_err(|_| AnalysisError::ColumnType {
                query: self.query.clone(),
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
            DataType::List(_) | DataType::LargeList(_) | DataType::ListView(_) => Some(cast_to(
                "reasons",
                &DataType::List(Arc::new(arrow::datatypes::Field::new_list_field(DataType::Utf8, true))),
                "text or a list of text",
            )?),
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

/// Replaces a table's rows: `partitions[i]` goes to partition `i` modulo the table's count.
async fn fill(table: &MemTable, partitions: Vec<Vec<RecordBatch>>) {
    let count = table.batches.len();
    let mut spread = vec![Vec::new(); count];
    for (i, batches) in partitions.into_iter().enumerate() {
        spread[i % count].extend(batches);
    }
    for (slot, batches) in table.batches.iter().zip(spread) {
        *slot.write().await = batches;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::cloudfront::{CURRENT_FIELDS, parse_log, test_line};

    /// Two sessions: `shared1` from two addresses, `alone1` from one.
    fn requests() -> Vec<RecordBatch> {
        let line = |time: &str, ip: &str, session: &str| {
            let uri = format!("/{session}.eyJh.eyJi.c2ln/live/ch1/720p/seg_00001.ts");
            test_line(&[(0, "2026-11-20"), (1, time), (3, "1000"), (4, ip), (7, &uri), (8, "200")])
        };
        let text = format!(
            "#Version: 1.0\n#Fields: {CURRENT_FIELDS}\n{}\n{}\n{}\n",
            line("10:00:00", "192.0.2.1", "shared1"),
            line("10:00:01", "192.0.2.2", "shared1"),
            line("10:00:02", "192.0.2.3", "alone1"),
        );
        parse_log("test", text.as_bytes()).unwrap().batches
    }

    const THREE_STATEMENTS: &str = "\
        CREATE TABLE addresses AS SELECT session_id, c_ip FROM requests;\n\
        CREATE TABLE counted AS SELECT session_id, count(DISTINCT c_ip) AS ips FROM addresses GROUP BY session_id;\n\
        SELECT session_id, CAST(ips AS DOUBLE) AS score, ips >= 2 AS flagged, 'x' AS reasons FROM counted";

    fn analyzer(sql: &str) -> Analyzer {
        let query = DetectionQuery::parse("three", None, sql).unwrap();
        let params = query.bind_params(&Default::default()).unwrap();
        Analyzer::new(query, params)
    }

    fn window() -> Window {
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z").unwrap().to_utc();
        Window { start, end: start + chrono::Duration::minutes(10) }
    }

    async fn rows(table: &MemTable) -> usize {
        let mut rows = 0;
        for partition in &table.batches {
            rows += partition.read().await.iter().map(RecordBatch::num_rows).sum::<usize>();
        }
        rows
    }

    #[tokio::test]
    async fn a_table_is_emptied_once_no_statement_left_reads_it_and_kept_while_one_does() {
        let planned = analyzer(THREE_STATEMENTS).plan(&window()).await.unwrap();
        let results = planned.execute(requests(), None).await.unwrap();
        assert_eq!(results.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
        // `requests` is read by the first statement only, `addresses` by the second only.
        assert_eq!(rows(&planned.requests).await, 0);
        assert_eq!(rows(&planned.steps[0].table).await, 0);
        // The last statement reads `counted`: it still holds both sessions.
        assert_eq!(rows(&planned.steps[1].table).await, 2);
    }

    #[tokio::test]
    async fn a_query_planned_before_its_logs_arrive_reads_them_and_the_tables_made_of_them() {
        let analysed = analyzer(THREE_STATEMENTS).plan(&window()).await.unwrap().analyse_where(requests(), |_, _| true).await.unwrap();
        let flagged: Vec<(&str, bool)> = analysed.scores.iter().map(|s| (s.session_id.as_str(), s.flagged)).collect();
        assert_eq!(flagged, vec![("shared1", true), ("alone1", false)]);
        assert_eq!(analysed.sessions, 2);
    }

    #[tokio::test]
    async fn a_table_created_under_a_name_already_taken_is_an_error_naming_it() {
        for taken in ["requests", "addresses"] {
            let sql = format!(
                "CREATE TABLE addresses AS SELECT session_id, c_ip FROM requests;\n{}",
                THREE_STATEMENTS.replace("CREATE TABLE addresses", &format!("CREATE TABLE {taken}"))
            );
            let Err(err) = analyzer(&sql).plan(&window()).await else { panic!("{taken}: planned") };
            let message = err.to_string();
            assert!(message.contains(&format!("table `{taken}` exists already")), "{message}");
        }
    }

    #[tokio::test]
    async fn a_profile_shows_every_statement_with_its_operators_rows() {
        let text = analyzer(THREE_STATEMENTS).explain_analyze(requests(), &window()).await.unwrap();
        let headings: Vec<&str> = text.lines().filter(|l| l.starts_with("-- statement")).collect();
        assert_eq!(headings.len(), 3, "{text}");
        for (heading, name) in headings.iter().zip(["1 (addresses)", "2 (counted)", "3 (result)"]) {
            assert!(heading.starts_with(&format!("-- statement {name}: ")), "{heading}");
        }
        assert!(text.contains("output_rows=3"), "the scan of the three requests: {text}");
    }
}
