//! Parse-once cache: each log object, once parsed, is kept as a zstd Parquet file of the
//! `requests` columns read from the log under `state_dir/cache` (a path's title, rendition,
//! file and number are derived again on reading), named by the object key and its ETag. A later
//! run reads the Parquet instead of fetching and parsing the object again; a rewritten object
//! (new ETag) is parsed afresh. A corrupt or unreadable cache file is deleted and the object
//! parsed from its source: the cache can always be thrown away.
//!
//! Rows are stored in log order in small row groups, so a run reads only the row groups that
//! overlap its window (from the Parquet min/max statistics): objects are named by the hour,
//! windows are minutes. CloudFront writes lines nearly in time order, which keeps each
//! group's time range short; sorting them first cost more than it saved (measured with
//! `revokd-bench speed`), and a straggler only widens a group's range, never drops a row.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use object_store::ObjectMeta;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::cloudfront::{ParseStats, ParsedObject, STORED_SCHEMA, with_path_parts};
use super::names::{LogObjectName, Window};

/// Bumped whenever the `requests` schema or parsing rules change, so old files are ignored.
const CACHE_FORMAT: &str = "revokd-requests-v4";
/// Rows per row group: about a minute of a busy distribution's lines per object.
const ROW_GROUP_ROWS: usize = 16 * 1024;
const STATS_KEY: &str = "revokd.parse_stats";

pub struct ParseCache {
    dir: PathBuf,
}

pub struct CacheHit {
    pub batches: Vec<RecordBatch>,
    pub stats: ParseStats,
}

impl ParseCache {
    pub fn new(dir: PathBuf) -> Self {
        ParseCache { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file_for(&self, meta: &ObjectMeta) -> PathBuf {
        let etag = meta.e_tag.as_deref().unwrap_or("");
        // Readable file names: the key with `/` escaped, then the ETag; both sanitised.
        let key = sanitise(meta.location.as_ref());
        let tag = sanitise(etag.trim_matches('"'));
        self.dir.join(format!("{key}@{tag}@{}.parquet", meta.size))
    }

    /// The object's rows that can fall inside `window`, if cached.
    pub async fn get(&self, meta: &ObjectMeta, window: &Window) -> Option<CacheHit> {
        let path = self.file_for(meta);
        let object = meta.location.to_string();
        let (from, to) = (window.start.timestamp(), window.end.timestamp());
        tokio::task::spawn_blocking(move || {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => {
                    tracing::warn!(object, cache_file = %path.display(), error = %e, "cannot open parse cache file; parsing the object again");
                    return None;
                }
            };
            match read_cached(&path, file, from, to) {
                Ok(hit) => Some(hit),
                Err(message) => {
                    tracing::warn!(object, cache_file = %path.display(), error = %message, "corrupt parse cache file removed; parsing the object again");
                    let _ = std::fs::remove_file(&path);
                    None
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// Starts storing a parsed object on a blocking thread and returns at once: the write
    /// overlaps whatever the run does next. Failure to cache is logged, never fatal: the run
    /// has its data.
    pub fn put(&self, meta: &ObjectMeta, parsed: &ParsedObject) -> tokio::task::JoinHandle<()> {
        let path = self.file_for(meta);
        let dir = self.dir.clone();
        let batches = parsed.batches.clone();
        let stats = parsed.stats;
        let object = meta.location.to_string();
        tokio::task::spawn_blocking(move || {
            let result = std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display())).and_then(|()| {
                crate::atomic_file::replace_with(&path, |tmp| write_cached(tmp, &batches, &stats).map_err(std::io::Error::other))
                    .map_err(|e| format!("{}: {e}", path.display()))
            });
            if let Err(message) = result {
                tracing::warn!(object, error = %message, "could not write parse cache");
            }
        })
    }

    /// Deletes cache files of objects whose hours all lie before the window.
    pub fn prune(&self, window: &Window, max_request_duration: Duration) {
        let first_needed = *window.file_hours(max_request_duration).start();
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((key, _)) = name.split_once('@') else { continue };
            let key = key.replace("%2F", "/");
            let hour = LogObjectName::parse(&object_store::path::Path::from(key.as_str())).map(|n| n.hour);
            if let Some(hour) = hour
                && hour < first_needed
                && let Err(e) = std::fs::remove_file(entry.path())
            {
                tracing::warn!(cache_file = %entry.path().display(), error = %e, "could not prune parse cache file");
            }
        }
    }
}

fn sanitise(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '/' => out.push_str("%2F"),
            c if c.is_ascii_alphanumeric() || "._-".contains(c) => out.push(c),
            c => out.push_str(&format!("%{:02X}", c as u32 & 0xff)),
        }
    }
    out
}

fn write_cached(path: &Path, batches: &[RecordBatch], stats: &ParseStats) -> Result<(), String> {
    let file = File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    let stats_json = serde_json::to_string(stats).expect("stats serialise");
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
        // Only the time column's statistics are read (to skip row groups outside a window);
        // min/max of every text value cost more than the rest of the write.
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled("epoch_s".into(), EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(Some(vec![
            parquet::file::metadata::KeyValue::new("revokd.format".into(), CACHE_FORMAT.to_string()),
            parquet::file::metadata::KeyValue::new(STATS_KEY.into(), stats_json),
        ]));
    // Numbers are stored plain under zstd: Parquet's dictionary of a row group's sizes or
    // times is interned value by value and saved little. One object's cache file, written
    // alone: its number columns 20 -> 14 ms, and 1.62 -> 1.31 MB.
    for field in STORED_SCHEMA.fields().iter().filter(|f| !matches!(f.data_type(), DataType::Dictionary(..))) {
        props = props.set_column_dictionary_enabled(field.name().as_str().into(), false);
    }
    let mut writer =
        ArrowWriter::try_new(file, STORED_SCHEMA.clone(), Some(props.build())).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let stored: Vec<usize> = (0..STORED_SCHEMA.fields().len()).collect();
    for batch in batches {
        let batch = batch.project(&stored).map_err(|e| format!("writing {}: {e}", path.display()))?;
        writer.write(&batch).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    writer.close().map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(())
}

/// Reads the row groups whose `epoch_s` range meets `[from, to)`.
fn read_cached(path: &Path, file: File, from: i64, to: i64) -> Result<CacheHit, String> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?;
    let kv = builder.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
    let value = |key: &str| kv.iter().find(|e| e.key == key).and_then(|e| e.value.clone());
    if value("revokd.format").as_deref() != Some(CACHE_FORMAT) {
        return Err("written by another version".into());
    }
    let stats: ParseStats = serde_json::from_str(&value(STATS_KEY).ok_or("no parse stats")?).map_err(|e| format!("parse stats: {e}"))?;
    // Field by field: the reader also carries the file's key-value metadata in its schema.
    if builder.schema().fields() != STORED_SCHEMA.fields() {
        return Err("schema differs from this version's".into());
    }
    let groups = builder.metadata().row_groups();
    let rows: i64 = groups.iter().map(|g| g.num_rows()).sum();
    if rows as u64 != stats.rows {
        return Err(format!("holds {rows} rows where {} were parsed", stats.rows));
    }
    let mut selected = Vec::new();
    for (i, group) in groups.iter().enumerate() {
        let range = match group.column(0).statistics() {
            Some(parquet::file::statistics::Statistics::Int64(s)) => s.min_opt().zip(s.max_opt()).map(|(a, b)| (*a, *b)),
            _ => None,
        };
        // Without statistics, read the group: never drop rows we cannot rule out.
        if range.is_none_or(|(min, max)| max >= from && min < to) {
            selected.push(i);
        }
    }
    // The newest object of a window holds most of its rows: its row groups are decoded on
    // every core instead of one (the incremental run's read took ~40 % less).
    let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_schema(builder.schema().clone());
    let metadata =
        parquet::arrow::arrow_reader::ArrowReaderMetadata::try_new(builder.metadata().clone(), options).map_err(|e| e.to_string())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parts: Vec<Vec<usize>> = selected.chunks(selected.len().div_ceil(cores).max(1)).map(<[usize]>::to_vec).collect();
    let read_part = |groups: Vec<usize>, builder: ParquetRecordBatchReaderBuilder<File>| -> Result<Vec<RecordBatch>, String> {
        builder
            .with_row_groups(groups)
            // A batch spanning two row groups gets values from two dictionaries, which the
            // reader can only merge by decoding every value and building a new dictionary
            // (a fifth of an incremental run's reading). A batch per row group keeps each
            // group's dictionary as it was written.
            .with_batch_size(ROW_GROUP_ROWS)
            .build()
            .map_err(|e| e.to_string())?
            .map(|batch| with_path_parts(&batch?))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    };
    let mut parts = parts.into_iter();
    let Some(first) = parts.next() else {
        return Ok(CacheHit { batches: Vec::new(), stats });
    };
    let results: Vec<Result<Vec<RecordBatch>, String>> = std::thread::scope(|scope| {
        // Each part opens the file itself: clones of one handle would share its offset.
        let others: Vec<_> = parts
            .map(|groups| {
                let (metadata, read_part) = (metadata.clone(), &read_part);
                scope.spawn(move || {
                    let file = File::open(path).map_err(|e| e.to_string())?;
                    read_part(groups, ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata))
                })
            })
            .collect();
        let mut results = vec![read_part(first, builder)];
        results.extend(others.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("reading thread panicked".into()))));
        results
    });
    let mut batches = Vec::new();
    for part in results {
        batches.extend(part?);
    }
    Ok(CacheHit { batches, stats })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::cloudfront::{CURRENT_FIELDS, REQUESTS_SCHEMA, parse_log, test_line};

    /// `n` log lines one second apart from 2026-11-20T10:00:00Z.
    fn log(n: usize) -> String {
        let mut text = format!("#Version: 1.0\n#Fields: {CURRENT_FIELDS}\n");
        for i in 0..n {
            let t = 36_000 + i;
            let time = format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60);
            let ip = format!("203.0.113.{}", i % 7);
            let uri = format!("/s{}.h.p.s/live/ch1/720p/seg_{i}.ts", i % 11);
            text.push_str(&test_line(&[(0, "2026-11-20"), (1, &time), (3, "1000"), (4, &ip), (7, &uri), (8, "200")]));
            text.push('\n');
        }
        text
    }

    /// The `epoch_s` of every row read, in order.
    fn epochs(hit: &CacheHit) -> Vec<i64> {
        use arrow::array::AsArray;
        hit.batches.iter().flat_map(|b| b.column(0).as_primitive::<arrow::datatypes::Int64Type>().values().to_vec()).collect()
    }

    #[test]
    fn a_narrow_window_reads_only_the_row_groups_it_overlaps_and_all_its_rows() {
        // Three row groups and a bit; the window covers part of the second one only.
        let rows = 3 * ROW_GROUP_ROWS + 100;
        let parsed = parse_log("t.gz", log(rows).as_bytes()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        write_cached(&path, &parsed.batches, &parsed.stats).unwrap();
        let start = 1_795_168_800 + ROW_GROUP_ROWS as i64 + 10;
        let hit = read_cached(&path, File::open(&path).unwrap(), start, start + 600).unwrap();
        let loaded: usize = hit.batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(loaded, ROW_GROUP_ROWS, "only the row group holding the window is read");
        assert_eq!(hit.stats.rows, rows as u64, "the object's parse stats are kept whole");
        let read = epochs(&hit);
        assert!((start..start + 600).all(|t| read.contains(&t)), "every row of the window is there");

        // A window over everything: the row groups are read in parts (one per core), every
        // row comes back once and in the file's order.
        let all = read_cached(&path, File::open(&path).unwrap(), 0, i64::MAX).unwrap();
        assert_eq!(epochs(&all), (0..rows as i64).map(|i| 1_795_168_800 + i).collect::<Vec<_>>());
    }

    #[test]
    fn a_cached_object_reads_back_as_the_rows_it_was_parsed_into_path_parts_included() {
        // The cache stores the path but not its parts: they are derived again on reading, and
        // must come out as the parser made them, for every shape of path.
        let paths = [
            "/s1.h.p.s/live/ch1/720p/seg_000042.ts",
            "/s2.h.p.s/vod/t/1080p/chunk_448792204.m4s",
            "/s3.h.p.s/vod/t/720p/media.mp4",
            "/s4.h.p.s/master.m3u8",
            "/s5.h.p.s/a/b/c/d/480p/init.mp4",
        ];
        let mut text = format!("#Version: 1.0\n#Fields: {CURRENT_FIELDS}\n");
        for (i, line) in log(2 * ROW_GROUP_ROWS + 5).lines().skip(2).enumerate() {
            let mut f: Vec<&str> = line.split('\t').collect();
            f[7] = paths[i % paths.len()];
            text.push_str(&f.join("\t"));
            text.push('\n');
        }
        let parsed = parse_log("t.gz", text.as_bytes()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        write_cached(&path, &parsed.batches, &parsed.stats).unwrap();
        let read = read_cached(&path, File::open(&path).unwrap(), 0, i64::MAX).unwrap();
        // Batches and dictionaries are cut differently: compare values, column by column.
        let values = |batches: &[RecordBatch]| -> Vec<arrow::array::ArrayRef> {
            let whole = arrow::compute::concat_batches(&REQUESTS_SCHEMA, batches).unwrap();
            whole
                .columns()
                .iter()
                .map(|c| match c.data_type() {
                    arrow::datatypes::DataType::Dictionary(_, value) => arrow::compute::cast(c, value).unwrap(),
                    _ => c.clone(),
                })
                .collect()
        };
        let (want, got) = (values(&parsed.batches), values(&read.batches));
        for (i, field) in REQUESTS_SCHEMA.fields().iter().enumerate() {
            assert_eq!(&got[i], &want[i], "column {}", field.name());
        }
    }
}
