//! Log source: finds the CloudFront log objects that can hold entries of the analysis window,
//! fetches them through `object_store` (S3 or a local directory alike) and parses them into
//! Arrow batches of the `requests` table.

pub mod cache;
pub mod cloudfront;
pub mod names;

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore};

use crate::config::{LogLocation, LogsConfig};
pub use cloudfront::{ParseStats, REQUESTS_SCHEMA};
pub use names::{HourIndex, LogObjectName, Window};

/// How much earlier than the last run an object's LastModified may be and still count as
/// delivered after it (an upload is stamped when it begins, and listed once it ends).
const DELIVERY_MARGIN: chrono::Duration = chrono::Duration::minutes(1);

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
    #[error("log location {location} (`logs.url`) is not a directory")]
    NotADirectory { location: String },
    #[error("log location {location} is not a directory any more (moved, deleted or unmounted?)")]
    Gone { location: String },
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
    /// Of those, objects skipped because their content cannot be read (no usable header, a
    /// corrupt gzip stream); each is named in an error event and tried again by the next run.
    pub objects_unreadable: u64,
    /// Compressed bytes fetched.
    pub bytes_fetched: u64,
    /// Objects delivered since the last successful run holding requests from before the
    /// window, for which the window reached back (a run of the present only).
    pub objects_delivered_late: u64,
    /// Objects delivered since the last successful run, longer than `logs.max_delivery_delay`
    /// after their hour's last request, for hours wholly before the reach (listed one more
    /// reach back): not read, analysed by no run.
    pub objects_delivered_too_late: u64,
    /// Lines of objects delivered since the last successful run, made longer than
    /// `logs.max_delivery_delay` before their delivery and before the reach: analysed by no run.
    pub lines_delivered_too_late: u64,
    #[serde(flatten)]
    pub parse: ParseStats,
}

/// The requests of the window's objects, ready for analysis.
pub struct LoadedLogs {
    pub batches: Vec<RecordBatch>,
    pub stats: SourceStats,
    /// Parse-cache files still being written for the objects parsed now.
    pub cache_writes: CacheWrites,
    /// The requests these logs are read for: the window asked for, or one that starts earlier
    /// for logs delivered late ([`LogSource::load_reaching_back`]).
    pub window: Window,
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
    /// The directory of a local location: listing one that has gone finds nothing, which
    /// must fail the run rather than pass for a window without requests.
    local_dir: Option<std::path::PathBuf>,
    distribution_ids: Vec<String>,
    /// S3 lists keys in lexicographic order, so a listing can stop past the window's last
    /// hour; a local directory lists in no particular order.
    ordered_listing: bool,
    max_request_duration: Duration,
    max_delivery_delay: Duration,
    max_concurrent_fetches: usize,
    cache: Option<cache::ParseCache>,
    /// Draw a progress bar on stderr while loading (an ad-hoc run in a terminal).
    progress: bool,
}

impl LogSource {
    pub async fn from_config(config: &LogsConfig, state_dir: &std::path::Path) -> Result<Self, SourceError> {
        let local_dir = match &config.location {
            LogLocation::Local(dir) => Some(dir.clone()),
            LogLocation::S3 { .. } => None,
        };
        let (store, prefix, location, ordered_listing): (Arc<dyn ObjectStore>, _, _, _) = match &config.location {
            LogLocation::Local(dir) => {
                let location = format!("file://{}", dir.display());
                if !dir.is_dir() {
                    return Err(SourceError::NotADirectory { location });
                }
                let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|source| SourceError::Open { location: location.clone(), source })?;
                (Arc::new(fs), ObjectPath::default(), location, false)
            }
            LogLocation::S3 { bucket, prefix } => {
                let location = format!("s3://{bucket}/{prefix}");
                // Credentials and the region as the SDK clients find them (profiles and SSO
                // included); the rest of the standard AWS environment as object_store reads it.
                let sdk = crate::aws::sdk_config(config.region.as_deref(), None).await;
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
                if let Some(region) = sdk.region() {
                    builder = builder.with_region(region.as_ref());
                }
                if let Some(provider) = sdk.credentials_provider() {
                    builder = builder.with_credentials(Arc::new(crate::aws::S3Credentials::new(provider)));
                }
                if let Some(endpoint) = &config.endpoint {
                    // S3-compatible stores and emulators address buckets by path.
                    builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
                }
                if config.allow_http {
                    builder = builder.with_allow_http(true);
                }
                let s3 = builder.build().map_err(|source| SourceError::Open { location: location.clone(), source })?;
                (Arc::new(s3), ObjectPath::from(prefix.as_str()), location, true)
            }
        };
        Ok(LogSource {
            store,
            prefix,
            location,
            local_dir,
            distribution_ids: config.distribution_ids.clone(),
            ordered_listing,
            max_request_duration: config.max_request_duration,
            max_delivery_delay: config.max_delivery_delay,
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
        if self.local_dir.as_ref().is_some_and(|dir| !dir.is_dir()) {
            return Err(SourceError::Gone { location: self.location.clone() });
        }
        let hours = window.file_hours(self.max_request_duration);
        let mut listed = if !self.ordered_listing {
            // A local directory is read whole whatever the offset: filter it in one pass.
            self.list_filtered(&hours).await?
        } else if self.distribution_ids.is_empty() {
            self.list_skipping(&hours).await?
        } else {
            self.list_distributions(&hours).await?
        };
        if listed.unnamed > 0 {
            tracing::debug!(
                location = %self.location,
                objects = listed.unnamed,
                "objects without a CloudFront log name are read in full every run"
            );
        }
        listed.objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(listed.objects)
    }

    fn list_prefix(&self) -> Option<&ObjectPath> {
        (!self.prefix.as_ref().is_empty()).then_some(&self.prefix)
    }

    fn list_error(&self, source: object_store::Error) -> SourceError {
        SourceError::List { location: self.location.clone(), source }
    }

    /// Every object under the prefix, kept when its name is in the window's hours.
    async fn list_filtered(&self, hours: &RangeInclusive<HourIndex>) -> Result<Listed, SourceError> {
        let mut listed = Listed::default();
        let mut listing = self.store.list(self.list_prefix());
        while let Some(meta) = listing.try_next().await.map_err(|e| self.list_error(e))? {
            match LogObjectName::parse(&meta.location) {
                Some(name) if !self.distribution_ids.is_empty() && !self.distribution_ids.contains(&name.distribution) => {}
                Some(name) if hours.contains(&name.hour) => listed.objects.push(meta),
                Some(_) => {}
                None => listed.push_unnamed(meta),
            }
        }
        Ok(listed)
    }

    /// Each configured distribution's keys from the window's first hour to past its last.
    async fn list_distributions(&self, hours: &RangeInclusive<HourIndex>) -> Result<Listed, SourceError> {
        let mut listed = Listed::default();
        for dist in &self.distribution_ids {
            // Keys sort by `<DIST>.<YYYY-MM-DD-HH>`: start listing at the first hour of the
            // window instead of the beginning of the bucket. The offset is exclusive; an object
            // named exactly `<DIST>.<hour>` is not CloudFront's.
            let first = names::hour_key(&self.prefix, dist, *hours.start());
            let past_last = names::hour_key(&self.prefix, dist, *hours.end() + 1);
            let mut listing = self.store.list_with_offset(self.list_prefix(), &ObjectPath::from(first.as_str()));
            while let Some(meta) = listing.try_next().await.map_err(|e| self.list_error(e))? {
                if meta.location.as_ref() >= past_last.as_str() {
                    break;
                }
                if let Some(name) = LogObjectName::parse(&meta.location)
                    && name.distribution == *dist
                    && hours.contains(&name.hour)
                {
                    listed.objects.push(meta);
                }
            }
        }
        Ok(listed)
    }

    /// Lists the window's hours of every distribution without knowing the distributions: a
    /// skip scan over the ordered keys. At a distribution's first key before the window the
    /// listing starts again at that distribution's first hour of the window (`start-after`),
    /// and at its first key past the window it starts again after the distribution's last
    /// possible key. A bucket with months of logs costs a few list requests per distribution
    /// instead of one per thousand keys it holds.
    async fn list_skipping(&self, hours: &RangeInclusive<HourIndex>) -> Result<Listed, SourceError> {
        let mut listed = Listed::default();
        let first_stamp = names::hour_stamp(*hours.start());
        let mut offset: Option<ObjectPath> = None;
        'restart: loop {
            let mut listing = match &offset {
                Some(offset) => self.store.list_with_offset(self.list_prefix(), offset),
                None => self.store.list(self.list_prefix()),
            };
            while let Some(meta) = listing.try_next().await.map_err(|e| self.list_error(e))? {
                let Some(name) = LogObjectName::parse(&meta.location) else {
                    listed.push_unnamed(meta);
                    continue;
                };
                // `<dir>/<DIST>.`: the part of the key every file of this distribution shares.
                let key = meta.location.as_ref();
                let file_len = meta.location.filename().map_or(0, str::len);
                let stem = &key[..key.len() - file_len + name.distribution.len() + 1];
                let jump = if name.hour < *hours.start() {
                    // Hour stamps are fixed-width, so they sort in time order.
                    format!("{stem}{first_stamp}")
                } else if name.hour > *hours.end() {
                    // ':' sorts after every digit, so after every hour stamp.
                    format!("{stem}:")
                } else {
                    listed.objects.push(meta);
                    continue;
                };
                // A jump must land past the current key, or the scan could come back to it.
                match ObjectPath::parse(&jump) {
                    Ok(jump) if jump.as_ref() > key => {
                        offset = Some(jump);
                        continue 'restart;
                    }
                    _ => {}
                }
            }
            return Ok(listed);
        }
    }

    /// Lists, fetches and parses every object of the window.
    pub async fn load(&self, window: &Window) -> Result<LoadedLogs, SourceError> {
        let objects = self.list_window(window).await?;
        let progress = self.progress.then(|| Progress::new(&objects));
        let loaded = self.load_objects(objects, window, progress.as_ref(), None).await?;
        drop(progress);
        self.prune_cache(window);
        Ok(loaded.into_logs(*window))
    }

    /// For a run of the present: the window's logs, and the requests of objects delivered at
    /// or after `delivered_since` (the end of the last successful run's window) from up to
    /// `logs.max_delivery_delay` before that. CloudFront delivers a file usually
    /// within an hour of its requests, so most requests reach the bucket after the window
    /// that held them was analysed. The window returned starts at the earliest of them, so
    /// that they are analysed together with every other request of their time.
    pub async fn load_reaching_back(&self, window: &Window, delivered_since: DateTime<Utc>) -> Result<LoadedLogs, SourceError> {
        let reach = self.reach();
        // An object's LastModified is when its upload began, a little before a listing can
        // see it: counting an object delivered just before the last run again only widens
        // this run's window.
        let delivered_since = delivered_since - DELIVERY_MARGIN;
        // A request delivered within the reach of its making is read: the earliest of them in
        // an object delivered since the last run was made a reach before that run. After a
        // stop the reach is counted from a lookback before this one (`unanalysed_before`
        // names the rest).
        let horizon = Window { start: before(delivered_since.max(window.start), reach), end: window.end };
        if horizon.start >= window.start {
            return self.load(window).await;
        }
        // Listed one reach further back, to count what comes too late to read. CloudFront
        // may deliver up to a day late, but listing a day of keys each run would cost more
        // than the reading.
        let accounted = Window { start: before(horizon.start, reach), end: window.end };
        let (delivered, earlier): (Vec<_>, Vec<_>) =
            self.list_window(&accounted).await?.into_iter().partition(|meta| meta.last_modified >= delivered_since);
        let horizon_hours = horizon.file_hours(self.max_request_duration);
        let (delivered, before_reach): (Vec<_>, Vec<_>) = delivered.into_iter().partition(|meta| may_hold(meta, &horizon_hours));
        // Of files the window cannot reach, those delivered too late for any run. The rest
        // came in time for a run that did not happen (a stop): the run's report names their
        // requests (`unanalysed_before`).
        let too_late = before_reach.iter().filter(|meta| self.delivered_after_last_request(meta, reach)).count() as u64;
        let window_hours = window.file_hours(self.max_request_duration);
        let (in_window, before_window): (Vec<_>, Vec<_>) = earlier.into_iter().partition(|meta| may_hold(meta, &window_hours));

        let progress = self.progress.then(|| Progress::new(&[delivered.as_slice(), in_window.as_slice()].concat()));
        let (delivered, in_window_loaded) = futures::try_join!(
            // Whole, back to the horizon: where these objects' requests start is what sets the window.
            self.load_objects(delivered, &horizon, progress.as_ref(), Some(reach)),
            self.load_objects(in_window.clone(), window, progress.as_ref(), None)
        )?;
        drop(progress);
        let earliest = delivered.earliest_of_each.iter().flatten().min().copied();
        let reached = Window { start: earliest.map_or(window.start, |t| t.min(window.start)), end: window.end };
        let mut loaded = if reached == *window {
            in_window_loaded
        } else {
            // The window's objects were read for the window alone. What they, and the objects
            // of the hours before it, hold from the earliest delivered request up to the window
            // is read now (from the parse cache, once their writes are done), and only that:
            // the window's rows are not decoded twice. A row group straddling the window's
            // start comes back in both reads, and each read keeps its own side of it.
            let mut loaded = in_window_loaded;
            std::mem::take(&mut loaded.cache_writes).wait().await;
            let reached_hours = reached.file_hours(self.max_request_duration);
            let before_window: Vec<_> = before_window.into_iter().filter(|meta| may_hold(meta, &reached_hours)).collect();
            let up_to_window = Window { start: reached.start, end: window.start };
            let progress = self.progress.then(|| Progress::new(&[in_window.as_slice(), before_window.as_slice()].concat()));
            let (again, before) = futures::try_join!(
                self.load_objects(in_window, &up_to_window, progress.as_ref(), None),
                self.load_objects(before_window, &reached, progress.as_ref(), None)
            )?;
            drop(progress);
            let window_start = window.start.timestamp();
            loaded.batches = rows_where(std::mem::take(&mut loaded.batches), |t| t >= window_start);
            loaded.batches.extend(rows_where(again.batches, |t| t < window_start));
            // Counted once, by the first read; an object parsed again (its cache write failed)
            // may be writing again.
            loaded.cache_writes.0.extend(again.cache_writes.0);
            loaded.absorb(before);
            loaded
        };
        loaded.stats.objects_delivered_too_late = too_late;
        loaded.stats.lines_delivered_too_late = delivered.stats.lines_delivered_too_late;
        if loaded.stats.objects_delivered_too_late + loaded.stats.lines_delivered_too_late > 0 {
            tracing::warn!(
                objects_delivered_too_late = loaded.stats.objects_delivered_too_late,
                lines_delivered_too_late = loaded.stats.lines_delivered_too_late,
                max_delivery_delay = %humantime::format_duration(self.max_delivery_delay),
                "log requests delivered later than logs.max_delivery_delay after they were made are analysed by no run"
            );
        }
        loaded.stats.objects_delivered_late =
            delivered.earliest_of_each.iter().filter(|t| t.is_some_and(|t| t < window.start)).count() as u64;
        loaded.absorb(delivered);
        if reached != *window {
            tracing::info!(
                window_start = %reached.start,
                reached_back_s = (window.start - reached.start).num_seconds(),
                objects_delivered_late = loaded.stats.objects_delivered_late,
                "window reaches back for requests whose logs were delivered after the windows that held them"
            );
        }
        self.prune_cache(&horizon);
        Ok(loaded.into_logs(reached))
    }

    /// Whether a CloudFront log object was delivered longer than `delay` after the last
    /// request its hour can hold.
    fn delivered_after_last_request(&self, meta: &ObjectMeta, delay: chrono::Duration) -> bool {
        let overrun = chrono::Duration::from_std(self.max_request_duration).unwrap_or(chrono::Duration::MAX);
        LogObjectName::parse(&meta.location)
            .and_then(|name| DateTime::from_timestamp((name.hour + 1) * 3600, 0))
            .and_then(|hour_end| hour_end.checked_add_signed(overrun))
            .is_some_and(|last_request| meta.last_modified - last_request > delay)
    }

    /// Deletes cache files no run of the present can need again: those before `window` and
    /// before the farthest a run reaches back for late deliveries.
    fn prune_cache(&self, window: &Window) {
        let Some(cache) = &self.cache else { return };
        cache.prune(&Window { start: before(window.start, self.reach()), end: window.end }, self.max_request_duration);
    }

    /// `logs.max_delivery_delay`, for date arithmetic.
    fn reach(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.max_delivery_delay).unwrap_or(chrono::Duration::MAX)
    }

    /// Fetches (or takes from the parse cache) and parses `objects`, keeping their rows that
    /// can fall in `window`.
    ///
    /// With `max_delivery_delay`, the objects are ones delivered since the last run, loaded
    /// over the reach: each one's earliest request in it is kept, and their requests before
    /// it, made longer than that before their object's delivery, are counted in
    /// `lines_delivered_too_late`.
    async fn load_objects(
        &self,
        objects: Vec<ObjectMeta>,
        window: &Window,
        progress: Option<&Progress>,
        max_delivery_delay: Option<chrono::Duration>,
    ) -> Result<Loaded, SourceError> {
        let mut stats = SourceStats { objects: objects.len() as u64, ..Default::default() };
        let loaded: Vec<_> = futures::stream::iter(objects)
            .map(|meta| async {
                let name = meta.location.to_string();
                let delivered = meta.last_modified;
                let object = match self.load_object(meta, window, progress.map(|p| &p.bar)).await {
                    Ok(object) => Some(object),
                    // One bad object must not blind detection to the rest of the window for as
                    // long as its hour stays in it; rows it would have given are only missing,
                    // and missing rows revoke nothing.
                    Err(SourceError::Parse(e)) if e.is_unreadable_content() => {
                        tracing::error!(object = %name, error = %e, "log object unreadable: skipped, and tried again by the next run");
                        None
                    }
                    Err(e) => return Err(e),
                };
                if let Some(progress) = progress {
                    progress.object_done(object.as_ref().map_or(0, |o| o.stats.lines));
                }
                Ok::<_, SourceError>(object.map(|object| (object, delivered)))
            })
            .buffered(self.max_concurrent_fetches)
            .try_collect()
            .await?;
        let mut batches = Vec::new();
        let mut cache_writes = CacheWrites::default();
        let mut earliest_of_each = Vec::new();
        for object in loaded {
            let Some((object, delivered)) = object else {
                stats.objects_unreadable += 1;
                continue;
            };
            if let Some(delay) = max_delivery_delay {
                // Made a reach before their delivery, and before the window's reach too: the
                // ones after it are analysed all the same.
                stats.lines_delivered_too_late += requests_before(&object.batches, before(delivered, delay).min(window.start));
                earliest_of_each.push(earliest_request(&object.batches, window));
            }
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
        Ok(Loaded { batches, stats, cache_writes, earliest_of_each })
    }

    /// One object's rows, from the parse cache or fetched and parsed; `progress` counts its
    /// compressed bytes as they are read.
    async fn load_object(
        &self,
        meta: ObjectMeta,
        window: &Window,
        progress: Option<&indicatif::ProgressBar>,
    ) -> Result<LoadedObject, SourceError> {
        let object = meta.location.to_string();
        if let Some(cache) = &self.cache
            && let Some(hit) = cache.get(&meta, window).await
        {
            if let Some(progress) = progress {
                progress.inc(meta.size);
            }
            return Ok(LoadedObject { batches: hit.batches, stats: hit.stats, bytes_fetched: 0, from_cache: true, cache_write: None });
        }
        let body = ObjectReader::new(self.store.clone(), meta.location.clone(), meta.size, progress.cloned());
        let bytes_fetched = meta.size;
        let name = object.clone();
        let parsed = tokio::task::spawn_blocking(move || parse_reader(&name, body)).await??;
        let cache_write = self.cache.as_ref().map(|cache| cache.put(&meta, &parsed));
        Ok(LoadedObject { batches: parsed.batches, stats: parsed.stats, bytes_fetched, from_cache: false, cache_write })
    }
}

/// Objects loaded together, before they become a run's [`LoadedLogs`].
struct Loaded {
    batches: Vec<RecordBatch>,
    stats: SourceStats,
    cache_writes: CacheWrites,
    /// Of objects delivered since the last run, each one's earliest request within the
    /// window they were loaded for.
    earliest_of_each: Vec<Option<DateTime<Utc>>>,
}

impl Loaded {
    fn absorb(&mut self, other: Loaded) {
        self.batches.extend(other.batches);
        self.cache_writes.0.extend(other.cache_writes.0);
        let (mine, theirs) = (&mut self.stats, other.stats);
        mine.objects += theirs.objects;
        mine.objects_parsed += theirs.objects_parsed;
        mine.objects_from_cache += theirs.objects_from_cache;
        mine.objects_unreadable += theirs.objects_unreadable;
        mine.bytes_fetched += theirs.bytes_fetched;
        mine.parse.add(&theirs.parse);
    }

    fn into_logs(self, window: Window) -> LoadedLogs {
        LoadedLogs { batches: self.batches, stats: self.stats, cache_writes: self.cache_writes, window }
    }
}

/// `duration` before `time`, or the earliest time there is.
fn before(time: DateTime<Utc>, duration: chrono::Duration) -> DateTime<Utc> {
    time.checked_sub_signed(duration).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Whether `meta` can hold requests of `hours`; one without a CloudFront name always can.
fn may_hold(meta: &ObjectMeta, hours: &RangeInclusive<HourIndex>) -> bool {
    LogObjectName::parse(&meta.location).is_none_or(|name| hours.contains(&name.hour))
}

/// The batch's request times, in seconds since the epoch.
fn times_of(batch: &RecordBatch) -> Option<&arrow::array::Int64Array> {
    batch.column_by_name("epoch_s")?.as_any().downcast_ref::<arrow::array::Int64Array>()
}

/// Every request's time in `batches`.
fn request_times(batches: &[RecordBatch]) -> impl Iterator<Item = i64> + '_ {
    batches.iter().filter_map(times_of).flat_map(|times| times.values().iter().copied())
}

/// The rows of `batches` whose request time `keep` accepts; batches it accepts whole are
/// kept as they are.
fn rows_where(batches: Vec<RecordBatch>, keep: impl Fn(i64) -> bool) -> Vec<RecordBatch> {
    batches
        .into_iter()
        .filter_map(|batch| {
            let Some(times) = times_of(&batch) else { return Some(batch) };
            let kept = times.values().iter().filter(|&&t| keep(t)).count();
            if kept == batch.num_rows() {
                return Some(batch);
            }
            if kept == 0 {
                return None;
            }
            let mask: arrow::array::BooleanArray = times.values().iter().map(|&t| Some(keep(t))).collect();
            Some(arrow::compute::filter_record_batch(&batch, &mask).expect("a mask as long as its batch"))
        })
        .collect()
}

/// Requests in `batches` made before `time`.
fn requests_before(batches: &[RecordBatch], time: DateTime<Utc>) -> u64 {
    let time = time.timestamp();
    request_times(batches).filter(|&t| t < time).count() as u64
}

/// The earliest request time in `batches` within `window`, if any.
fn earliest_request(batches: &[RecordBatch], window: &Window) -> Option<DateTime<Utc>> {
    let (from, to) = (window.start.timestamp(), window.end.timestamp());
    request_times(batches).filter(|t| (from..to).contains(t)).min().and_then(|t| DateTime::from_timestamp(t, 0))
}

/// What a listing found.
#[derive(Default)]
struct Listed {
    objects: Vec<ObjectMeta>,
    /// Objects without a CloudFront log name (counted in `objects` too).
    unnamed: u64,
}

impl Listed {
    /// Without a CloudFront name an object's hours are unknown: it is read rather than
    /// missing entries, and rows outside the window are filtered by the query.
    fn push_unnamed(&mut self, meta: ObjectMeta) {
        self.unnamed += 1;
        self.objects.push(meta);
    }
}

/// The terminal's progress bar: compressed bytes as they are read (the bar itself), and
/// objects and lines as each object is done (its message).
struct Progress {
    bar: indicatif::ProgressBar,
    objects: usize,
    done: AtomicU64,
    lines: AtomicU64,
}

impl Progress {
    fn new(objects: &[ObjectMeta]) -> Self {
        let bar = indicatif::ProgressBar::new(objects.iter().map(|o| o.size).sum());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} reading logs [{bar:30}] {binary_bytes}/{binary_total_bytes}, {msg} ({elapsed})",
            )
            .map(|style| style.progress_chars("=> "))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let progress = Progress { bar, objects: objects.len(), done: AtomicU64::new(0), lines: AtomicU64::new(0) };
        progress.show(0, 0);
        progress
    }

    fn object_done(&self, lines: u64) {
        let seen = self.lines.fetch_add(lines, Ordering::Relaxed) + lines;
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.show(done, seen);
    }

    fn show(&self, done: u64, lines: u64) {
        self.bar.set_message(format!("{done}/{} objects, {lines} lines", self.objects));
    }
}

/// A bar is cleared however its loading ends, an error included: logs and messages that
/// follow it are not written across a stale bar.
impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Reads an object in ranged requests of [`ObjectReader::CHUNK`] bytes, fetching the next
/// while the current one is parsed: memory stays at two chunks per object in flight, not
/// whole objects, and large requests keep S3 efficient (a plain `get` stream comes in small
/// pieces). Its chunks are handed out in place (`BufRead`), so the inflater reads them
/// without another copy. For use on a blocking thread.
///
/// A local object comes back from the first request as an open file, which is then read
/// through one reused buffer: `object_store` reads each local range into a fresh buffer,
/// and faulting in those pages was two fifths of a cold run's page faults.
struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    location: ObjectPath,
    size: u64,
    next_offset: u64,
    current: bytes::Bytes,
    position: usize,
    pending: Option<tokio::task::JoinHandle<object_store::Result<Chunk>>>,
    local: Option<std::io::BufReader<std::io::Take<std::fs::File>>>,
    runtime: tokio::runtime::Handle,
    /// Bytes are counted here as the inflater consumes them, so a large object moves the
    /// progress bar while it is read, not only once it is done.
    progress: Option<indicatif::ProgressBar>,
}

enum Chunk {
    Bytes(bytes::Bytes),
    /// The object as an open file, from a store on the local file system, and where the
    /// requested range starts in it.
    File(std::fs::File, u64),
}

impl ObjectReader {
    const CHUNK: u64 = 4 * 1024 * 1024;
    /// Read from a local file at a time: enough to make each read system call worth it.
    const LOCAL_BUFFER: usize = 256 * 1024;

    fn new(store: Arc<dyn ObjectStore>, location: ObjectPath, size: u64, progress: Option<indicatif::ProgressBar>) -> Self {
        let mut reader = ObjectReader {
            store,
            location,
            size,
            next_offset: 0,
            current: bytes::Bytes::new(),
            position: 0,
            pending: None,
            local: None,
            runtime: tokio::runtime::Handle::current(),
            progress,
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
        // `get_range` as `object_store` defines it, but keeping a local store's open file.
        self.pending = Some(self.runtime.spawn(async move {
            let result = store.get_opts(&location, object_store::GetOptions::new().with_range(Some(range))).await?;
            match result.payload {
                object_store::GetResultPayload::File(file, _) => Ok(Chunk::File(file, result.range.start)),
                payload => object_store::GetResult { payload, ..result }.bytes().await.map(Chunk::Bytes),
            }
        }));
    }
}

impl std::io::BufRead for ObjectReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.local.is_none()
            && self.position == self.current.len()
            && let Some(pending) = self.pending.take()
        {
            match self.runtime.block_on(pending).map_err(std::io::Error::other)?.map_err(std::io::Error::other)? {
                Chunk::Bytes(bytes) => {
                    self.current = bytes;
                    self.position = 0;
                    self.fetch_next();
                }
                Chunk::File(mut file, start) => {
                    // The file comes open at its start, not at the range's; the listed size
                    // bounds the read, as the ranges did.
                    use std::io::{Read, Seek};
                    file.seek(std::io::SeekFrom::Start(start))?;
                    let file = file.take(self.size.saturating_sub(start));
                    self.local = Some(std::io::BufReader::with_capacity(Self::LOCAL_BUFFER, file));
                }
            }
        }
        match &mut self.local {
            Some(local) => local.fill_buf(),
            None => Ok(&self.current[self.position..]),
        }
    }

    fn consume(&mut self, amount: usize) {
        if let Some(progress) = &self.progress {
            progress.inc(amount as u64);
        }
        match &mut self.local {
            Some(local) => local.consume(amount),
            None => self.position = (self.position + amount).min(self.current.len()),
        }
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
pub fn parse_reader(object: &str, mut body: impl std::io::BufRead + Send) -> Result<cloudfront::ParsedObject, cloudfront::ParseError> {
    use std::io::Read;
    // A stream may deliver its first bytes one at a time: read the two magic bytes for sure,
    // then put them back in front.
    let mut magic = Vec::with_capacity(2);
    (&mut body).take(2).read_to_end(&mut magic).map_err(|source| cloudfront::ParseError::Io {
        object: object.to_string(),
        line: 1,
        source,
    })?;
    let gzip = magic == [0x1f, 0x8b];
    let body = std::io::Cursor::new(magic).chain(body);
    if gzip {
        // The inflater reads `body`'s buffers in place, and inflates straight into the
        // parser's blocks: no buffer in between.
        cloudfront::parse_log_pipelined(object, flate2::bufread::MultiGzDecoder::new(body))
    } else {
        cloudfront::parse_log(object, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    /// An ordered in-memory store that counts the keys its listings hand out: the keys a
    /// paginated S3 listing would have transferred.
    #[derive(Debug, Default)]
    struct CountingStore {
        inner: object_store::memory::InMemory,
        keys_listed: Arc<AtomicU64>,
    }

    impl std::fmt::Display for CountingStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "CountingStore")
        }
    }

    impl CountingStore {
        fn counted(
            &self,
            listing: futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
            let keys_listed = self.keys_listed.clone();
            listing
                .inspect(move |_| {
                    keys_listed.fetch_add(1, Ordering::Relaxed);
                })
                .boxed()
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for CountingStore {
        async fn put_opts(
            &self,
            location: &ObjectPath,
            payload: object_store::PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &ObjectPath,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &ObjectPath,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<ObjectPath>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectPath>> {
            self.inner.delete_stream(locations)
        }
        fn list(&self, prefix: Option<&ObjectPath>) -> futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.counted(self.inner.list(prefix))
        }
        fn list_with_offset(
            &self,
            prefix: Option<&ObjectPath>,
            offset: &ObjectPath,
        ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.counted(self.inner.list_with_offset(prefix, offset))
        }
        async fn list_with_delimiter(&self, prefix: Option<&ObjectPath>) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(&self, from: &ObjectPath, to: &ObjectPath, options: object_store::CopyOptions) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    fn source_over(store: Arc<CountingStore>, prefix: &str, distribution_ids: &[&str], ordered_listing: bool) -> LogSource {
        LogSource {
            store,
            prefix: ObjectPath::from(prefix),
            location: "memory".into(),
            local_dir: None,
            distribution_ids: distribution_ids.iter().map(|d| d.to_string()).collect(),
            ordered_listing,
            max_request_duration: Duration::ZERO,
            max_delivery_delay: Duration::ZERO,
            max_concurrent_fetches: 1,
            cache: None,
            progress: false,
        }
    }

    fn at(rfc3339: &str) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&chrono::Utc)
    }

    fn keys(objects: &[ObjectMeta]) -> Vec<String> {
        objects.iter().map(|o| o.location.to_string()).collect()
    }

    #[tokio::test]
    async fn listing_without_distribution_ids_skips_the_hours_outside_the_window() {
        let store = Arc::new(CountingStore::default());
        let first_hour = names::parse_hour_stamp("2026-10-01-00").unwrap();
        let window_hour = names::parse_hour_stamp("2026-11-20-10").unwrap();
        let mut expected = Vec::new();
        let mut stored = 0;
        // Seven weeks of hourly files of three distributions, one in a folder of its own.
        for dist_prefix in ["cf/E1", "cf/E22", "cf/tv/E1"] {
            for hour in first_hour..window_hour + 30 {
                for id in ["a1", "b2"] {
                    let key = format!("{dist_prefix}.{}.{id}.gz", names::hour_stamp(hour));
                    store.put(&ObjectPath::from(key.as_str()), "x".into()).await.unwrap();
                    stored += 1;
                    if hour == window_hour {
                        expected.push(key);
                    }
                }
            }
        }
        // Objects without CloudFront names, between and after the distributions' files.
        for key in ["cf/E1.notes.txt", "cf/E2.readme", "cf/zz-manifest.json"] {
            store.put(&ObjectPath::from(key), "x".into()).await.unwrap();
            stored += 1;
            expected.push(key.to_string());
        }
        expected.sort();
        let window = Window::ending_at(at("2026-11-20T10:20:00Z"), Duration::from_secs(600));

        let skipping = source_over(store.clone(), "cf", &[], true).list_window(&window).await.unwrap();
        let skipped_listing = store.keys_listed.swap(0, Ordering::Relaxed);
        let full = source_over(store.clone(), "cf", &[], false).list_window(&window).await.unwrap();
        let full_listing = store.keys_listed.swap(0, Ordering::Relaxed);

        assert_eq!(keys(&skipping), expected);
        assert_eq!(keys(&full), expected);
        // Per distribution: the first key, the window's keys, the first key past the window.
        assert!(skipped_listing <= 3 * 4 + 3, "skip scan handed out {skipped_listing} keys");
        assert_eq!(full_listing, stored);
    }

    #[tokio::test]
    async fn listing_with_distribution_ids_reads_only_those_distributions() {
        let store = Arc::new(CountingStore::default());
        let hour = names::parse_hour_stamp("2026-11-20-10").unwrap();
        for dist in ["E1", "E2", "E3"] {
            for h in hour - 48..=hour + 1 {
                store.put(&ObjectPath::from(format!("cf/{dist}.{}.id.gz", names::hour_stamp(h))), "x".into()).await.unwrap();
            }
        }
        let window = Window::ending_at(at("2026-11-20T10:50:00Z"), Duration::from_secs(600));
        for ordered in [true, false] {
            let found = source_over(store.clone(), "cf", &["E1", "E3"], ordered).list_window(&window).await.unwrap();
            assert_eq!(keys(&found), ["cf/E1.2026-11-20-10.id.gz", "cf/E3.2026-11-20-10.id.gz"], "ordered listing: {ordered}");
        }
    }

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

    /// A local object is read through the file the store opens, anything else in ranged
    /// requests: both give the object's bytes, across buffer and range boundaries, and stop
    /// at the listed size.
    #[tokio::test(flavor = "multi_thread")]
    async fn local_files_and_ranged_reads_give_the_same_bytes() {
        use std::io::Read;
        let size = 2 * ObjectReader::CHUNK as usize + ObjectReader::LOCAL_BUFFER + 123;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8 ^ (i / 4096) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("E1.2026-11-20-10.a.gz"), &data).unwrap();
        let location = ObjectPath::from("E1.2026-11-20-10.a.gz");
        let local: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let memory = object_store::memory::InMemory::new();
        memory.put(&location, data.clone().into()).await.unwrap();
        let memory: Arc<dyn ObjectStore> = Arc::new(memory);
        for (store, from_file) in [(local, true), (memory, false)] {
            for listed in [size as u64, 1000] {
                let mut reader = ObjectReader::new(store.clone(), location.clone(), listed, None);
                let (read, used_file) = tokio::task::spawn_blocking(move || {
                    let mut read = Vec::new();
                    reader.read_to_end(&mut read).unwrap();
                    (read, reader.local.is_some())
                })
                .await
                .unwrap();
                assert_eq!(used_file, from_file);
                assert!(read == data[..listed as usize], "{} bytes read of {listed} listed, file {from_file}", read.len());
            }
        }
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
