//! Log source: finds the CloudFront log objects that can hold entries of the analysis window,
//! fetches them through `object_store` (S3 or a local directory alike) and parses them into
//! Arrow batches of the `requests` table.

pub mod cache;
pub mod cloudfront;
pub mod names;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::config::{LogLocation, LogsConfig};
pub use cloudfront::{ParseStats, REQUESTS_SCHEMA};
pub use names::{LogObjectName, Window};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open log location {location}: {source}")]
    Open {
        location: String,
        #[source]
        source: object_store::Error,
    },
    #[error("listing log objects under {location}: {source}")]
    List {
        location: String,
        #[source]
        source: object_store::Error,
    },
    #[error("fetching log object {object}: {source}")]
    Fetch {
        object: String,
        #[source]
        source: object_store::Error,
    },
    #[error(transparent)]
    Parse(#[from] cloudfront::ParseError),
    #[error("log object {object}: {message}")]
    Cache { object: String, message: String },
    #[error("parsing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What one run read.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SourceStats {
    /// Objects listed under the prefix whose name put them inside the window.
    pub objects: u64,
    /// Of those, objects fetched and parsed now (the rest came from the parse cache).
    pub objects_parsed: u64,
    pub objects_from_cache: u64,
    /// Compressed bytes fetched.
    pub bytes_fetched: u64,
    #[serde(flatten)]
    pub parse: ParseStats,
}

/// The requests of the window's objects, ready for analysis.
pub struct LoadedLogs {
    pub batches: Vec<RecordBatch>,
    pub stats: SourceStats,
    /// Parse-cache files still being written for the objects parsed now.
    pub cache_writes: CacheWrites,
}

/// Cache files being written in the background while the run goes on (on two cores the
/// analysis leaves room for them). A run waits for them before it ends, so a one-shot run
/// leaves its cache complete.
#[derive(Default)]
#[must_use = "wait for the cache writes before the run ends"]
pub struct CacheWrites(Vec<tokio::task::JoinHandle<()>>);

impl CacheWrites {
    pub async fn wait(self) {
        for write in self.0 {
            if let Err(e) = write.await {
                tracing::warn!(error = %e, "parse cache write task failed");
            }
        }
    }
}

pub struct LogSource {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    location: String,
    distribution_ids: Vec<String>,
    /// S3 lists keys in lexicographic order, so a listing can stop past the window's last
    /// hour; a local directory lists in no particular order.
    ordered_listing: bool,
    max_request_duration: Duration,
    max_concurrent_fetches: usize,
    cache: Option<cache::ParseCache>,
    /// Draw a progress bar on stderr while loading (an ad-hoc run in a terminal).
    progress: bool,
}

impl LogSource {
    pub fn from_config(config: &LogsConfig, state_dir: &std::path::Path) -> Result<Self, SourceError> {
        let (store, prefix, location, ordered_listing): (Arc<dyn ObjectStore>, _, _, _) =
            match &config.location {
                LogLocation::Local(dir) => {
                    let location = format!("file://{}", dir.display());
                    let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                        .map_err(|source| SourceError::Open { location: location.clone(), source })?;
                    (Arc::new(fs), ObjectPath::default(), location, false)
                }
                LogLocation::S3 { bucket, prefix } => {
                    let location = format!("s3://{bucket}/{prefix}");
                    // Credentials and defaults come from the standard AWS environment.
                    let mut builder = object_store::aws::AmazonS3Builder::from_env()
                        .with_bucket_name(bucket)
                        // Transient errors (5xx, SlowDown, timeouts) are retried with
                        // exponential backoff; a range that still fails fails the run, which
                        // the next scheduled run repeats.
                        .with_retry(object_store::RetryConfig {
                            backoff: object_store::BackoffConfig::default(),
                            max_retries: config.max_retries,
                            retry_timeout: Duration::from_secs(180),
                        });
                    if let Some(region) = &config.region {
                        builder = builder.with_region(region);
                    }
                    if let Some(endpoint) = &config.endpoint {
                        // S3-compatible stores and emulators address buckets by path.
                        builder = builder
                            .with_endpoint(endpoint)
                            .with_virtual_hosted_style_request(false);
                    }
                    if config.allow_http {
                        builder = builder.with_allow_http(true);
                    }
                    let s3 = builder
                        .build()
                        .map_err(|source| SourceError::Open { location: location.clone(), source })?;
                    (Arc::new(s3), ObjectPath::from(prefix.as_str()), location, true)
                }
            };
        Ok(LogSource {
            store,
            prefix,
            location,
            distribution_ids: config.distribution_ids.clone(),
            ordered_listing,
            max_request_duration: config.max_request_duration,
            max_concurrent_fetches: config.max_concurrent_fetches,
            cache: config.cache.then(|| cache::ParseCache::new(state_dir.join("cache"))),
            progress: false,
        })
    }

    /// Shows a progress bar (objects, bytes, lines) while loading; for interactive use only.
    pub fn show_progress(&mut self, show: bool) {
        self.progress = show;
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// The objects that can hold entries inside `window`, by their names.
    pub async fn list_window(&self, window: &Window) -> Result<Vec<ObjectMeta>, SourceError> {
        let hours = window.file_hours(self.max_request_duration);
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let list_err = |source| SourceError::List { location: self.location.clone(), source };
        let mut found = Vec::new();
        let mut unnamed = 0u64;
        if self.distribution_ids.is_empty() {
            let mut listing = self.store.list(prefix);
            while let Some(meta) = listing.try_next().await.map_err(list_err)? {
                match LogObjectName::parse(&meta.location) {
                    Some(name) if hours.contains(&name.hour) => found.push(meta),
                    Some(_) => {}
                    None => {
                        // Without a CloudFront name we cannot tell its hours: read it rather than
                        // miss entries; rows outside the window are filtered by the query.
                        unnamed += 1;
                        found.push(meta);
                    }
                }
            }
        } else {
            for dist in &self.distribution_ids {
                // Keys sort by `<DIST>.<YYYY-MM-DD-HH>`: start listing at the first hour of the
                // window instead of the beginning of the bucket.
                let first = names::hour_key(&self.prefix, dist, *hours.start());
                let past_last = names::hour_key(&self.prefix, dist, *hours.end() + 1);
                let offset = ObjectPath::from(first.as_str());
                let mut listing = self.store.list_with_offset(prefix, &offset);
                while let Some(meta) = listing.try_next().await.map_err(list_err)? {
                    let key = meta.location.as_ref();
                    if self.ordered_listing && key >= past_last.as_str() {
                        break;
                    }
                    if let Some(name) = LogObjectName::parse(&meta.location)
                        && name.distribution == *dist
                        && hours.contains(&name.hour)
                    {
                        found.push(meta);
                    }
                }
            }
            // The offset is exclusive; an object named exactly `<DIST>.<hour>` is not CloudFront's.
        }
        if unnamed > 0 {
            tracing::debug!(
                location = %self.location,
                objects = unnamed,
                "objects without a CloudFront log name are read in full every run"
            );
        }
        found.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(found)
    }

    /// Lists, fetches and parses every object of the window.
    pub async fn load(&self, window: &Window) -> Result<LoadedLogs, SourceError> {
        let objects = self.list_window(window).await?;
        let mut stats = SourceStats { objects: objects.len() as u64, ..Default::default() };
        let bar = self.progress.then(|| progress_bar(&objects));
        let lines = std::sync::atomic::AtomicU64::new(0);
        let loaded: Vec<_> = futures::stream::iter(objects)
            .map(|meta| async {
                let size = meta.size;
                let object = self.load_object(meta, window).await?;
                if let Some(bar) = &bar {
                    let seen = lines.fetch_add(object.stats.lines, std::sync::atomic::Ordering::Relaxed) + object.stats.lines;
                    bar.inc(size);
                    bar.set_message(format!("{seen} lines"));
                }
                Ok::<_, SourceError>(object)
            })
            .buffered(self.max_concurrent_fetches)
            .try_collect()
            .await?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let mut batches = Vec::new();
        let mut cache_writes = CacheWrites::default();
        for object in loaded {
            cache_writes.0.extend(object.cache_write);
            stats.bytes_fetched += object.bytes_fetched;
            if object.from_cache {
                stats.objects_from_cache += 1;
            } else {
                stats.objects_parsed += 1;
            }
            stats.parse.add(&object.stats);
            batches.extend(object.batches);
        }
        if let Some(cache) = &self.cache {
            cache.prune(window, self.max_request_duration);
        }
        Ok(LoadedLogs { batches, stats, cache_writes })
    }

    async fn load_object(&self, meta: ObjectMeta, window: &Window) -> Result<LoadedObject, SourceError> {
        let object = meta.location.to_string();
        if let Some(cache) = &self.cache
            && let Some(hit) = cache.get(&meta, window).await
        {
            return Ok(LoadedObject { batches: hit.batches, stats: hit.stats, bytes_fetched: 0, from_cache: true, cache_write: None });
        }
        let body = ObjectReader::new(self.store.clone(), meta.location.clone(), meta.size);
        let bytes_fetched = meta.size;
        let name = object.clone();
        let parsed = tokio::task::spawn_blocking(move || parse_reader(&name, body)).await??;
        let cache_write = self.cache.as_ref().map(|cache| cache.put(&meta, &parsed));
        Ok(LoadedObject { batches: parsed.batches, stats: parsed.stats, bytes_fetched, from_cache: false, cache_write })
    }
}

fn progress_bar(objects: &[ObjectMeta]) -> indicatif::ProgressBar {
    let total = objects.iter().map(|o| o.size).sum();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} reading {prefix} log objects [{bar:30}] {binary_bytes}/{binary_total_bytes}, {msg} ({elapsed})")
            .map(|style| style.progress_chars("=> "))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(objects.len().to_string());
    bar
}

/// Reads an object in ranged requests of [`ObjectReader::CHUNK`] bytes, fetching the next
/// while the current one is parsed: memory stays at two chunks per object in flight, not
/// whole objects, and large requests keep S3 and local files alike efficient (a plain
/// `get` stream of a local file comes in 8 KiB pieces). Its chunks are handed out in place
/// (`BufRead`), so the inflater reads them without another copy. For use on a blocking thread.
struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    location: ObjectPath,
    size: u64,
    next_offset: u64,
    current: bytes::Bytes,
    position: usize,
    pending: Option<tokio::task::JoinHandle<object_store::Result<bytes::Bytes>>>,
    runtime: tokio::runtime::Handle,
}

impl ObjectReader {
    const CHUNK: u64 = 4 * 1024 * 1024;

    fn new(store: Arc<dyn ObjectStore>, location: ObjectPath, size: u64) -> Self {
        let mut reader = ObjectReader {
            store,
            location,
            size,
            next_offset: 0,
            current: bytes::Bytes::new(),
            position: 0,
            pending: None,
            runtime: tokio::runtime::Handle::current(),
        };
        reader.fetch_next();
        reader
    }

    fn fetch_next(&mut self) {
        if self.next_offset >= self.size {
            return;
        }
        let range = self.next_offset..self.size.min(self.next_offset + Self::CHUNK);
        self.next_offset = range.end;
        let (store, location) = (self.store.clone(), self.location.clone());
        self.pending = Some(self.runtime.spawn(async move { store.get_range(&location, range).await }));
    }
}

impl std::io::BufRead for ObjectReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.position == self.current.len()
            && let Some(pending) = self.pending.take()
        {
            self.current = self.runtime.block_on(pending).map_err(std::io::Error::other)?.map_err(std::io::Error::other)?;
            self.position = 0;
            self.fetch_next();
        }
        Ok(&self.current[self.position..])
    }

    fn consume(&mut self, amount: usize) {
        self.position = (self.position + amount).min(self.current.len());
    }
}

impl std::io::Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead;
        let available = self.fill_buf()?;
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

struct LoadedObject {
    batches: Vec<RecordBatch>,
    stats: ParseStats,
    bytes_fetched: u64,
    from_cache: bool,
    cache_write: Option<tokio::task::JoinHandle<()>>,
}

/// Parses one object read from `body`, gzip or plain (told apart by the gzip magic number,
/// not the name).
pub fn parse_reader(object: &str, mut body: impl std::io::BufRead) -> Result<cloudfront::ParsedObject, cloudfront::ParseError> {
    use std::io::Read;
    // A stream may deliver its first bytes one at a time: read the two magic bytes for sure,
    // then put them back in front.
    let mut magic = Vec::with_capacity(2);
    (&mut body)
        .take(2)
        .read_to_end(&mut magic)
        .map_err(|source| cloudfront::ParseError::Io { object: object.to_string(), line: 1, source })?;
    let gzip = magic == [0x1f, 0x8b];
    let body = std::io::Cursor::new(magic).chain(body);
    if gzip {
        // The inflater reads `body`'s buffers in place, and parse_log reads in large blocks
        // itself: no buffer in between.
        cloudfront::parse_log(object, flate2::bufread::MultiGzDecoder::new(body))
    } else {
        cloudfront::parse_log(object, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out one byte per call, as a network stream may.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else { return Ok(0) };
            if buf.is_empty() {
                return Ok(0);
            }
            buf[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    fn gzip(text: &str) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(text.as_bytes()).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gzip_is_recognised_even_when_the_stream_delivers_one_byte_at_a_time() {
        let line = "2026-11-20\t10:00:00\tIAD89-C1\t500000\t198.51.100.7\tGET\td.cloudfront.net\t/abc.h.p.s/live/ch1/720p/seg_1.ts\t200\t-\tMozilla/5.0%20X\t-\t-\tHit\tid\tcdn.example\thttps\t100\t0.01\t-\tTLSv1.3\tTLS_AES_128_GCM_SHA256\tHit\tHTTP/2.0\t-\t-\t443\t0.01\tHit\tvideo/MP2T\t500000\t-\t-\n";
        let text = format!("#Version: 1.0\n#Fields: {}\n{line}", cloudfront::CURRENT_FIELDS);
        let compressed = gzip(&text);
        let from_trickle = parse_reader("trickle.gz", std::io::BufReader::with_capacity(1, Trickle(&compressed))).unwrap();
        assert_eq!(from_trickle.stats.rows, 1);
        assert_eq!(from_trickle.stats.malformed_lines, 0);
        let plain = parse_reader("plain.log", std::io::BufReader::with_capacity(1, Trickle(text.as_bytes()))).unwrap();
        assert_eq!(plain.stats.rows, 1);
    }
}
