//! `distinct_values(text)`: the distinct non-null values of a text column, as one list.
//!
//! The queries need each distinct user agent and session id of the window once, with its
//! text. `SELECT DISTINCT` grouped every row's text (as a string view: grouped as a
//! dictionary, every row would first be copied into DataFusion's row format), ~45 ms of
//! compute for the two over a scheduled run's 353 K rows. The logs come as dictionary
//! columns, one dictionary per batch: this marks which of a batch's dictionary entries its
//! rows use and looks at each entry's text once per batch, ~5 ms. The scheduled run with
//! every object cached went from 2.59 to 2.41 G instructions (callgrind), with the same
//! flagged sessions, scores and reasons. The set hashes with foldhash: with std's SipHash,
//! hashing the entries' text took most of the time left.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray, StringArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility};

pub fn distinct_values_udaf() -> AggregateUDF {
    AggregateUDF::from(DistinctValues { signature: Signature::any(1, Volatility::Immutable) })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DistinctValues {
    signature: Signature,
}

fn text_type(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(key, value) => key.is_integer() && text_type(value),
        _ => false,
    }
}

fn list_of_text() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

impl AggregateUDFImpl for DistinctValues {
    fn name(&self) -> &str {
        "distinct_values"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if !text_type(&arg_types[0]) {
            return plan_err!("distinct_values takes text, not {}", arg_types[0]);
        }
        Ok(list_of_text())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(format_state_name(args.name, "values"), list_of_text(), true))])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::<DistinctValuesAccumulator>::default())
    }
}

#[derive(Debug, Default)]
struct DistinctValuesAccumulator {
    seen: hashbrown::HashSet<String, foldhash::fast::RandomState>,
    /// Which entries of the current batch's dictionary its rows use; kept to reuse its memory.
    used: Vec<bool>,
}

impl DistinctValuesAccumulator {
    fn insert(&mut self, text: &str) {
        // One lookup; the text is copied only when it is new.
        self.seen.get_or_insert_with(text, str::to_owned);
    }

    /// Every non-null value of a (non-dictionary) text array, or of the entries `keep` selects.
    fn insert_all(&mut self, array: &dyn Array, keep: impl Fn(usize) -> bool) -> Result<()> {
        match array.data_type() {
            DataType::Utf8 => array.as_string::<i32>().iter().enumerate().for_each(|(i, v)| self.insert_kept(i, v, &keep)),
            DataType::LargeUtf8 => array.as_string::<i64>().iter().enumerate().for_each(|(i, v)| self.insert_kept(i, v, &keep)),
            DataType::Utf8View => array.as_string_view().iter().enumerate().for_each(|(i, v)| self.insert_kept(i, v, &keep)),
            other => return exec_err!("distinct_values takes text, not {other}"),
        }
        Ok(())
    }

    fn insert_kept(&mut self, index: usize, value: Option<&str>, keep: &impl Fn(usize) -> bool) {
        if let Some(text) = value
            && keep(index)
        {
            self.insert(text);
        }
    }

    fn as_list(&self) -> ScalarValue {
        let mut values: Vec<&str> = self.seen.iter().map(String::as_str).collect();
        // Sorted: the same input gives the same list, whatever the hash order.
        values.sort_unstable();
        let list = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Utf8, true)),
            OffsetBuffer::from_lengths([values.len()]),
            Arc::new(StringArray::from_iter_values(values)),
            None,
        );
        ScalarValue::List(Arc::new(list))
    }
}

impl Accumulator for DistinctValuesAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let array = &values[0];
        let Some(dictionary) = array.as_any_dictionary_opt() else {
            return self.insert_all(array.as_ref(), |_| true);
        };
        // A column with no value at all (every agent `-`) comes with an empty dictionary.
        if dictionary.values().is_empty() {
            return Ok(());
        }
        let mut used = std::mem::take(&mut self.used);
        used.clear();
        used.resize(dictionary.values().len(), false);
        let keys = dictionary.normalized_keys();
        // A row is null if its key is, or the entry it points at.
        match array.logical_nulls() {
            None => keys.into_iter().for_each(|key| used[key] = true),
            Some(nulls) => nulls.valid_indices().for_each(|row| used[keys[row]] = true),
        }
        let result = self.insert_all(dictionary.values().as_ref(), |entry| used[entry]);
        self.used = used;
        result
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        self.insert_all(lists.values().as_ref(), |_| true)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.as_list()])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.as_list())
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.seen.iter().map(|s| s.capacity() + size_of::<String>()).sum::<usize>() + self.used.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{DictionaryArray, Int32Array, RecordBatch};
    use arrow::datatypes::{Int32Type, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// Batches of a dictionary column whose dictionaries hold entries no row uses, null
    /// keys, a null entry, and no entry at all, spread over three partitions.
    fn table() -> Arc<MemTable> {
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let schema = Arc::new(Schema::new(vec![Field::new("g", DataType::Int32, false), Field::new("t", dictionary, true)]));
        let batch = |keys: Vec<Option<i32>>, entries: Vec<Option<&str>>| {
            let g = Int32Array::from_iter_values((0..keys.len() as i32).map(|i| i % 2));
            let t = DictionaryArray::<Int32Type>::try_new(Int32Array::from(keys), Arc::new(StringArray::from(entries))).unwrap();
            RecordBatch::try_new(schema.clone(), vec![Arc::new(g), Arc::new(t)]).unwrap()
        };
        let partitions = vec![
            vec![batch(vec![Some(0), Some(0), None, Some(2)], vec![Some("vlc"), Some("unused"), Some("mpv")])],
            vec![batch(vec![Some(1), Some(2), Some(1)], vec![Some("also unused"), Some("vlc"), None])],
            vec![
                batch(vec![Some(0)], vec![Some("curl"), Some("unused too")]),
                batch(vec![], vec![Some("empty batch")]),
                batch(vec![None, None], vec![]),
            ],
        ];
        Arc::new(MemTable::try_new(schema, partitions).unwrap())
    }

    async fn query(sql: &str) -> Vec<Vec<String>> {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(3));
        ctx.register_udaf(distinct_values_udaf());
        ctx.register_table("t", table()).unwrap();
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let mut lists = Vec::new();
        for batch in &batches {
            let column = batch.column(batch.num_columns() - 1).as_list::<i32>();
            for row in 0..column.len() {
                lists.push(column.value(row).as_string::<i32>().iter().map(|v| v.unwrap().to_string()).collect());
            }
        }
        lists
    }

    #[tokio::test]
    async fn the_values_rows_use_once_each_never_unused_dictionary_entries_or_nulls() {
        // Each partition aggregates on its own, then the partial lists are merged.
        assert_eq!(query("SELECT distinct_values(t) FROM t").await, vec![vec!["curl", "mpv", "vlc"]]);
    }

    #[tokio::test]
    async fn a_filter_keeps_only_the_values_of_the_rows_it_keeps() {
        assert_eq!(query("SELECT distinct_values(t) FROM t WHERE g = 1").await, vec![vec!["mpv", "vlc"]]);
        assert_eq!(query("SELECT g, distinct_values(t) FROM t GROUP BY g ORDER BY g").await, vec![vec!["curl", "vlc"], vec!["mpv", "vlc"]]);
    }

    #[tokio::test]
    async fn plain_text_of_every_kind_gives_its_distinct_values() {
        for column in ["v", "arrow_cast(v, 'Utf8View')", "arrow_cast(v, 'LargeUtf8')"] {
            let sql = format!("SELECT distinct_values({column}) FROM (VALUES ('vlc'), (NULL), ('mpv'), ('vlc')) AS x(v)");
            assert_eq!(query(&sql).await, vec![vec!["mpv", "vlc"]], "{column}");
        }
    }

    #[tokio::test]
    async fn anything_but_text_is_refused_when_planned() {
        let ctx = SessionContext::new();
        ctx.register_udaf(distinct_values_udaf());
        let err = ctx.sql("SELECT distinct_values(x) FROM (VALUES (1), (2)) AS t(x)").await.unwrap_err();
        assert!(err.to_string().contains("distinct_values takes text, not Int64"), "{err}");
    }
}
