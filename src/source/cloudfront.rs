//! CloudFront standard log format → Arrow.
//!
//! Columns are located through the file's `#Fields:` header, so current 33-field files and
//! older 24/26-field files are read alike. Only the columns detection needs are kept, and the
//! media URL is split at parse time into the session id and the path after the token: the
//! JWT itself (hundreds of bytes a line) never reaches memory.
//!
//! A line that cannot be read exactly is counted and skipped, never guessed at.

use std::hash::BuildHasher;
use std::io::Read;
use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, AsArray, DictionaryArray, Int32Builder, Int64Builder, RecordBatch, StringBuilder, UInt16Builder};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};

/// The `#Fields:` line of current (33-field) files, assumed when a file has no header.
pub const CURRENT_FIELDS: &str = "date time x-edge-location sc-bytes c-ip cs-method cs(Host) \
cs-uri-stem sc-status cs(Referer) cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type \
x-edge-request-id x-host-header cs-protocol cs-bytes time-taken x-forwarded-for ssl-protocol \
ssl-cipher x-edge-response-result-type cs-protocol-version fle-status fle-encrypted-fields \
c-port time-to-first-byte x-edge-detailed-result-type sc-content-type sc-content-len \
sc-range-start sc-range-end";

/// A line of the current fields for tests: `-` in every field but those given by index.
#[cfg(test)]
pub(crate) fn test_line(fields: &[(usize, &str)]) -> String {
    let mut line: Vec<&str> = CURRENT_FIELDS.split(' ').map(|_| "-").collect();
    for &(index, value) in fields {
        line[index] = value;
    }
    line.join("\t")
}

/// Rows per Arrow batch: large enough to amortise per-batch costs, small enough that a
/// batch's dictionaries stay in cache.
pub const BATCH_ROWS: usize = 64 * 1024;

/// Malformed lines reported individually per object; the rest only as a count.
const MAX_WARNINGS_PER_OBJECT: u64 = 5;

/// The `requests` table every detection query reads.
pub static REQUESTS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let dict = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    Arc::new(Schema::new(vec![
        // Seconds since the Unix epoch (UTC): when CloudFront finished the response.
        Field::new("epoch_s", DataType::Int64, false),
        Field::new("session_id", dict(), false),
        // The URI path after the token segment, e.g. `/live/ch1/720p/seg_00042.ts`.
        Field::new("object_path", dict(), false),
        Field::new("c_ip", dict(), false),
        Field::new("status", DataType::UInt16, false),
        Field::new("sc_bytes", DataType::Int64, true),
        Field::new("edge", dict(), true),
        Field::new("referer", dict(), true),
        Field::new("user_agent", dict(), true),
        // First byte of a range request (206), or NULL: tells apart the parts of one file.
        Field::new("range_start", DataType::Int64, true),
        // `object_path` as `<title>/<rendition>/<file>`, the layout of HLS/DASH ladders
        // (`/live/ch1` / `720p` / `seg_000042.ts`); shorter paths leave the leading parts empty.
        Field::new("title", dict(), false),
        Field::new("rendition", dict(), false),
        Field::new("file", dict(), false),
        // The number just before the file's extension (42 in seg_000042.ts), if any.
        Field::new("file_number", DataType::Int64, true),
    ]))
});

/// Columns of [`REQUESTS_SCHEMA`] read from the logs themselves, the first ones: the rest
/// (a path's title, rendition, file and file number) follow from `object_path` and are
/// computed once per distinct path ([`with_path_parts`]), so the parse cache does not store
/// them. Parquet's writer hashes every row of a dictionary column again, and writing those
/// four cost about a quarter of the cache write, itself a fifth of a cold run's CPU.
pub static STORED_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let fields = &REQUESTS_SCHEMA.fields()[..REQUESTS_SCHEMA.fields().len() - PATH_PART_FIELDS];
    Arc::new(Schema::new(fields.to_vec()))
});

/// title, rendition, file and file_number: the last fields of [`REQUESTS_SCHEMA`], appended
/// in that order by [`with_path_parts`].
const PATH_PART_FIELDS: usize = 4;

/// A batch of [`REQUESTS_SCHEMA`] from a batch of [`STORED_SCHEMA`]: the parts of each
/// distinct path are found once, and share the path column's keys.
pub fn with_path_parts(stored: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let object_path = stored
        .column_by_name("object_path")
        .and_then(|c| c.as_dictionary_opt::<Int32Type>())
        .ok_or_else(|| arrow::error::ArrowError::SchemaError("object_path is not a dictionary of Int32 keys".into()))?;
    let paths = object_path
        .values()
        .as_string_opt::<i32>()
        .ok_or_else(|| arrow::error::ArrowError::SchemaError("object_path values are not text".into()))?;
    let parts: Vec<PathParts> = paths.iter().map(|path| PathParts::of(path.unwrap_or(""))).collect();
    // Each part's dictionary holds each distinct value once: a title or rendition repeats
    // across thousands of paths (every segment of it), and detection hashes, compares and
    // groups dictionary values. A dictionary with one entry per path made the incremental
    // run's `key64` calls cost 4 % of its instructions.
    let by_path = |part: fn(&PathParts) -> &std::ops::Range<usize>| -> Result<ArrayRef, arrow::error::ArrowError> {
        let mut values = StringBuilder::new();
        let mut seen: hashbrown::HashMap<&str, i32, foldhash::fast::FixedState> = hashbrown::HashMap::default();
        let key_of_path: arrow::array::Int32Array = parts
            .iter()
            .enumerate()
            .map(|(key, p)| {
                let value = &paths.value(key)[part(p).clone()];
                let next = seen.len() as i32;
                *seen.entry(value).or_insert_with(|| {
                    values.append_value(value);
                    next
                })
            })
            .collect();
        let keys = arrow::compute::take(&key_of_path, object_path.keys(), None)?;
        let keys = keys.as_primitive::<Int32Type>().clone();
        Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values.finish()))?))
    };
    // One number per distinct path, then gathered row by row as the keys say.
    let numbers: arrow::array::Int64Array = parts.iter().map(|p| p.file_number).collect();
    let file_number = arrow::compute::take(&numbers, object_path.keys(), None)?;
    let mut columns = stored.columns().to_vec();
    columns.extend([by_path(|p| &p.title)?, by_path(|p| &p.rendition)?, by_path(|p| &p.file)?, file_number]);
    RecordBatch::try_new(REQUESTS_SCHEMA.clone(), columns)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParseStats {
    /// Log entries seen (header and blank lines excluded).
    pub lines: u64,
    /// Entries skipped because they could not be read exactly.
    pub malformed_lines: u64,
    /// Well-formed entries whose URL carries no session token (pages, favicons, …).
    pub lines_without_session: u64,
    /// Entries kept as rows.
    pub rows: u64,
}

impl ParseStats {
    pub fn add(&mut self, other: &ParseStats) {
        self.lines += other.lines;
        self.malformed_lines += other.malformed_lines;
        self.lines_without_session += other.lines_without_session;
        self.rows += other.rows;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{object}: reading line {line}: {source}")]
    Io {
        object: String,
        line: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{object}: line {line}: the #Fields header lacks `{field}`, which detection needs")]
    MissingField { object: String, line: u64, field: &'static str },
    #[error("{object}: building Arrow batch: {source}")]
    Arrow {
        object: String,
        #[source]
        source: arrow::error::ArrowError,
    },
}

impl ParseError {
    /// Whether the object's own bytes are at fault (a header without the needed fields, a
    /// corrupt or truncated gzip stream, which flate2 reports as invalid input or an early
    /// end), so reading it again fails the same way. A failed fetch (wrapped as `Other`) or a
    /// failing disk is not: those fail the run, to be retried whole.
    pub fn is_unreadable_content(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            ParseError::MissingField { .. } => true,
            ParseError::Io { source, .. } => {
                matches!(source.kind(), ErrorKind::InvalidInput | ErrorKind::InvalidData | ErrorKind::UnexpectedEof)
            }
            ParseError::Arrow { .. } => false,
        }
    }
}

/// Where each needed column sits in a line, from the `#Fields:` header.
#[derive(Debug, Clone)]
struct FieldMap {
    field_count: usize,
    /// For each position in a line, which needed column it feeds (if any).
    role_at: Vec<Option<Role>>,
    /// Fields before this index are located from the start of a line, fields from
    /// `back_from` on from its end, and in between only the tabs are counted: a line has 33
    /// fields and detection reads 10, the last of them next to the line's end.
    front_until: usize,
    back_from: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Date,
    Time,
    Edge,
    Bytes,
    Ip,
    UriStem,
    Status,
    Referer,
    UserAgent,
    RangeStart,
}

const ROLES: [(&str, Role, bool); 10] = [
    // (field name, role, required)
    ("date", Role::Date, true),
    ("time", Role::Time, true),
    ("x-edge-location", Role::Edge, false),
    ("sc-bytes", Role::Bytes, true),
    ("c-ip", Role::Ip, true),
    ("cs-uri-stem", Role::UriStem, true),
    ("sc-status", Role::Status, true),
    ("cs(Referer)", Role::Referer, false),
    ("cs(User-Agent)", Role::UserAgent, false),
    ("sc-range-start", Role::RangeStart, false),
];

impl FieldMap {
    fn from_header(names: &str) -> Result<FieldMap, &'static str> {
        let names: Vec<&str> = names.split_ascii_whitespace().collect();
        let mut role_at = vec![None; names.len()];
        for (name, role, required) in ROLES {
            match names.iter().position(|n| *n == name) {
                Some(i) => role_at[i] = Some(role),
                None if required => return Err(name),
                None => {}
            }
        }
        let field_count = names.len();
        let used = || role_at.iter().enumerate().filter(|(_, role)| role.is_some()).map(|(i, _)| i);
        let front_until = used().filter(|&i| i < field_count / 2).max().map_or(0, |i| i + 1);
        let back_from = used().filter(|&i| i >= field_count / 2).min().unwrap_or(field_count);
        Ok(FieldMap { field_count, role_at, front_until, back_from })
    }
}

static CURRENT_FIELD_MAP: LazyLock<FieldMap> = LazyLock::new(|| FieldMap::from_header(CURRENT_FIELDS).expect("current layout is complete"));

/// Why a line was skipped; shown in the warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    FieldCount { expected: usize, found: usize },
    Date,
    Time,
    Status,
    Bytes,
    Range,
    NotUtf8,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::FieldCount { expected, found } => {
                write!(f, "{found} fields where the header declares {expected}")
            }
            Malformed::Date => f.write_str("date is not YYYY-MM-DD"),
            Malformed::Time => f.write_str("time is not HH:MM:SS"),
            Malformed::Status => f.write_str("sc-status is not an HTTP status"),
            Malformed::Bytes => f.write_str("sc-bytes is neither a number nor `-`"),
            Malformed::Range => f.write_str("sc-range-start is neither a number nor `-`"),
            Malformed::NotUtf8 => f.write_str("a needed field is not valid UTF-8"),
        }
    }
}

/// The fields of one line that detection keeps, borrowed from the line. Text fields stay
/// raw bytes: they are checked and decoded once per distinct value, by [`DictColumn`].
struct Entry<'a> {
    epoch_s: i64,
    session_id: &'a [u8],
    object_path: &'a [u8],
    ip: &'a [u8],
    status: u16,
    bytes: Option<i64>,
    edge: Option<&'a [u8]>,
    referer: Option<&'a [u8]>,
    user_agent_raw: Option<&'a [u8]>,
    range_start: Option<i64>,
}

/// The parts of one distinct object path, computed once per dictionary entry.
struct PathParts {
    /// Byte ranges of the path: the parts are sliced from the path dictionary's values when
    /// the batch is finished, instead of three strings allocated per distinct path (about
    /// one path in two lines is new: every segment of every rendition).
    title: std::ops::Range<usize>,
    rendition: std::ops::Range<usize>,
    file: std::ops::Range<usize>,
    file_number: Option<i64>,
}

impl PathParts {
    /// Splits `<title>/<rendition>/<file>` from the right; missing leading parts are empty.
    fn of(path: &str) -> PathParts {
        let file_start = path.rfind('/').map_or(0, |slash| slash + 1);
        let dir_end = file_start.saturating_sub(1);
        let rendition_start = path[..dir_end].rfind('/').map_or(0, |slash| slash + 1);
        let file = &path[file_start..];
        let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
        let digits = stem.bytes().rev().take_while(u8::is_ascii_digit).count();
        let file_number = (digits > 0 && digits <= 18).then(|| stem[stem.len() - digits..].parse().ok()).flatten();
        PathParts {
            title: 0..rendition_start.saturating_sub(1),
            rendition: rendition_start..dir_end,
            file: file_start..path.len(),
            file_number,
        }
    }
}

/// Splits `<title>/<rendition>/<file>` from the right.
pub fn path_parts(path: &str) -> (&str, &str, &str, Option<i64>) {
    let parts = PathParts::of(path);
    (&path[parts.title], &path[parts.rendition], &path[parts.file], parts.file_number)
}

/// How a raw field becomes a column value.
#[derive(Clone, Copy)]
enum Decode {
    /// Kept as is; must be UTF-8.
    Utf8,
    /// Percent-decoded (once or twice, see [`url_decode_user_agent`]); invalid UTF-8 that
    /// hostile input can decode to is kept visible but safe.
    UserAgent,
}

/// A dictionary column built straight from the lines' bytes. A batch of 64 Ki lines holds a
/// few thousand sessions and addresses and a few hundred agents: checking and decoding each
/// distinct value once, and finding it again by its raw bytes, costs a fraction of handling
/// every line's copy (profiled: decoding agents and hashing decoded strings per line were a
/// third of parsing).
struct DictColumn {
    decode: Decode,
    /// Dictionary keys, found by the raw bytes' hash and compared with the raw bytes.
    table: hashbrown::HashTable<(u64, i32)>,
    /// Raw bytes of every dictionary value, back to back; `raw_ends[key]` ends value `key`.
    raw: Vec<u8>,
    raw_ends: Vec<usize>,
    hasher: foldhash::fast::RandomState,
    values: StringBuilder,
    keys: Int32Builder,
    scratch: Vec<u8>,
}

impl DictColumn {
    fn new(decode: Decode) -> Self {
        DictColumn {
            decode,
            table: hashbrown::HashTable::new(),
            raw: Vec::new(),
            raw_ends: Vec::new(),
            // Seeded per process: values come from viewers' requests, and with a known seed
            // crafted ones could be made to collide and turn lookups into scans.
            hasher: foldhash::fast::RandomState::default(),
            values: StringBuilder::new(),
            keys: Int32Builder::with_capacity(BATCH_ROWS),
            scratch: Vec::new(),
        }
    }

    fn raw_value<'r>(raw: &'r [u8], raw_ends: &[usize], key: i32) -> &'r [u8] {
        let key = key as usize;
        let start = if key == 0 { 0 } else { raw_ends[key - 1] };
        &raw[start..raw_ends[key]]
    }

    /// The dictionary key of `raw`, adding it (checked and decoded) if new. Nothing is
    /// appended to the column: a line is only added once all its fields are known good.
    fn intern(&mut self, raw: &[u8]) -> Result<i32, Malformed> {
        let hash = self.hasher.hash_one(raw);
        let (stored, ends) = (&self.raw, &self.raw_ends);
        if let Some(&(_, key)) = self.table.find(hash, |&(h, k)| h == hash && Self::raw_value(stored, ends, k) == raw) {
            return Ok(key);
        }
        match self.decode {
            Decode::Utf8 => self.values.append_value(std::str::from_utf8(raw).map_err(|_| Malformed::NotUtf8)?),
            Decode::UserAgent => {
                url_decode_user_agent(raw, &mut self.scratch);
                self.values.append_value(String::from_utf8_lossy(&self.scratch));
            }
        }
        let key = i32::try_from(self.raw_ends.len()).expect("fewer than 2^31 distinct values per batch");
        self.raw.extend_from_slice(raw);
        self.raw_ends.push(self.raw.len());
        self.table.insert_unique(hash, (hash, key), |&(h, _)| h);
        Ok(key)
    }

    fn intern_option(&mut self, raw: Option<&[u8]>) -> Result<Option<i32>, Malformed> {
        raw.map(|raw| self.intern(raw)).transpose()
    }

    fn finish(&mut self) -> Result<DictionaryArray<Int32Type>, arrow::error::ArrowError> {
        self.table.clear();
        self.raw.clear();
        self.raw_ends.clear();
        DictionaryArray::try_new(self.keys.finish(), Arc::new(self.values.finish()))
    }
}

/// Accumulates rows of the `requests` table.
struct Builders {
    epoch_s: Int64Builder,
    session_id: DictColumn,
    object_path: DictColumn,
    ip: DictColumn,
    status: UInt16Builder,
    bytes: Int64Builder,
    edge: DictColumn,
    referer: DictColumn,
    user_agent: DictColumn,
    range_start: Int64Builder,
    len: usize,
}

impl Builders {
    fn new() -> Self {
        Builders {
            epoch_s: Int64Builder::with_capacity(BATCH_ROWS),
            session_id: DictColumn::new(Decode::Utf8),
            object_path: DictColumn::new(Decode::Utf8),
            ip: DictColumn::new(Decode::Utf8),
            status: UInt16Builder::with_capacity(BATCH_ROWS),
            bytes: Int64Builder::with_capacity(BATCH_ROWS),
            edge: DictColumn::new(Decode::Utf8),
            referer: DictColumn::new(Decode::Utf8),
            user_agent: DictColumn::new(Decode::UserAgent),
            range_start: Int64Builder::with_capacity(BATCH_ROWS),
            len: 0,
        }
    }

    /// Adds a line's row, or leaves every column untouched when a field is not valid UTF-8.
    fn push(&mut self, e: &Entry<'_>) -> Result<(), Malformed> {
        let session_id = self.session_id.intern(e.session_id)?;
        let path = self.object_path.intern(e.object_path)?;
        let ip = self.ip.intern(e.ip)?;
        let edge = self.edge.intern_option(e.edge)?;
        let referer = self.referer.intern_option(e.referer)?;
        let user_agent = self.user_agent.intern_option(e.user_agent_raw)?;
        self.epoch_s.append_value(e.epoch_s);
        self.session_id.keys.append_value(session_id);
        self.object_path.keys.append_value(path);
        self.ip.keys.append_value(ip);
        self.status.append_value(e.status);
        self.bytes.append_option(e.bytes);
        self.edge.keys.append_option(edge);
        self.referer.keys.append_option(referer);
        self.user_agent.keys.append_option(user_agent);
        self.range_start.append_option(e.range_start);
        self.len += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.epoch_s.finish()),
            Arc::new(self.session_id.finish()?),
            Arc::new(self.object_path.finish()?),
            Arc::new(self.ip.finish()?),
            Arc::new(self.status.finish()),
            Arc::new(self.bytes.finish()),
            Arc::new(self.edge.finish()?),
            Arc::new(self.referer.finish()?),
            Arc::new(self.user_agent.finish()?),
            Arc::new(self.range_start.finish()),
        ];
        self.len = 0;
        with_path_parts(&RecordBatch::try_new(STORED_SCHEMA.clone(), columns)?)
    }
}

/// The result of parsing one log object.
#[derive(Debug)]
pub struct ParsedObject {
    pub batches: Vec<RecordBatch>,
    pub stats: ParseStats,
}

/// Bytes of decompressed log handed to the parser at a time; lines are parsed in place.
const BLOCK_BYTES: usize = 1024 * 1024;

/// Parses a whole (already decompressed) CloudFront log stream.
///
/// `object` names the source in warnings and errors. Malformed lines are counted, the first
/// few logged with their line number, and skipped.
pub fn parse_log<R: Read>(object: &str, reader: R) -> Result<ParsedObject, ParseError> {
    let mut parser = LogParser::new(object);
    let mut blocks = LineBlocks::new(reader);
    let mut block = Block::default();
    loop {
        match blocks.fill(&mut block) {
            Ok(true) => parser.block(block.text())?,
            Ok(false) => return parser.finish(),
            Err(source) => return Err(parser.read_error(source)),
        }
    }
}

/// As [`parse_log`], with the reading (inflating, for a gzip stream) on a thread of its own.
/// Inflating a line costs about as much as parsing it, so one object is read in about half
/// the time when a second core is free: a scheduled run's one new object, or the last
/// object of a cold run. Memory stays at a few blocks per object.
pub fn parse_log_pipelined<R: Read + Send>(object: &str, reader: R) -> Result<ParsedObject, ParseError> {
    /// Blocks read ahead of the parser.
    const READ_AHEAD: usize = 2;
    std::thread::scope(|scope| {
        // Both channels live inside the scope: when the parser returns early (an error), they
        // are dropped before the scope waits for the reading thread, which then stops.
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<std::io::Result<Block>>(READ_AHEAD);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Block>();
        scope.spawn(move || {
            let mut blocks = LineBlocks::new(reader);
            loop {
                let mut block = empty_rx.try_recv().unwrap_or_default();
                let next = match blocks.fill(&mut block) {
                    Ok(true) => Ok(block),
                    Ok(false) => return,
                    Err(e) => Err(e),
                };
                let failed = next.is_err();
                if full_tx.send(next).is_err() || failed {
                    return;
                }
            }
        });
        let mut parser = LogParser::new(object);
        for next in full_rx {
            let block = next.map_err(|source| parser.read_error(source))?;
            parser.block(block.text())?;
            // Handed back for reuse: a fresh block is a fresh mapping to fault in.
            let _ = empty_tx.send(block);
        }
        parser.finish()
    })
}

/// Text of whole lines (the stream's last line may lack its `\n`).
#[derive(Default)]
struct Block {
    buf: Vec<u8>,
    len: usize,
}

impl Block {
    fn text(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Cuts a stream into blocks of whole lines: the start of a line that a block cuts off is
/// carried into the next one, so lines are parsed in place and none is copied on its own.
struct LineBlocks<R> {
    reader: R,
    carry: Vec<u8>,
    /// A read that failed after whole lines had been read: reported once they are parsed,
    /// so the error names the line it stopped at.
    failed: Option<std::io::Error>,
}

impl<R: Read> LineBlocks<R> {
    fn new(reader: R) -> Self {
        LineBlocks { reader, carry: Vec::new(), failed: None }
    }

    /// Refills `block` with the next lines; false at the end of the stream.
    fn fill(&mut self, block: &mut Block) -> std::io::Result<bool> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let size = BLOCK_BYTES.max(2 * self.carry.len());
        if block.buf.len() < size {
            block.buf.resize(size, 0);
        }
        let mut len = self.carry.len();
        block.buf[..len].copy_from_slice(&self.carry);
        self.carry.clear();
        loop {
            let n = match self.reader.read(&mut block.buf[len..]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if self.cut_after_last_line(block, len) => {
                    self.failed = Some(e);
                    return Ok(true);
                }
                Err(e) => return Err(e),
            };
            len += n;
            if n == 0 {
                block.len = len;
                return Ok(len > 0);
            }
            if len == block.buf.len() {
                if self.cut_after_last_line(block, len) {
                    return Ok(true);
                }
                // One line longer than a block: make room for the rest of it.
                block.buf.resize(2 * block.buf.len(), 0);
            }
        }
    }

    /// Ends `block` after the last whole line of its first `len` bytes and carries the rest
    /// into the next block; false when those bytes hold no line break.
    fn cut_after_last_line(&mut self, block: &mut Block, len: usize) -> bool {
        let Some(last) = memchr::memrchr(b'\n', &block.buf[..len]) else { return false };
        self.carry.extend_from_slice(&block.buf[last + 1..len]);
        block.len = last + 1;
        true
    }
}

/// The state of parsing one object, line after line.
struct LogParser<'o> {
    object: &'o str,
    fields: Option<FieldMap>,
    builders: Builders,
    batches: Vec<RecordBatch>,
    stats: ParseStats,
    line_no: u64,
    days: DayCache,
}

impl<'o> LogParser<'o> {
    fn new(object: &'o str) -> Self {
        LogParser {
            object,
            fields: None,
            builders: Builders::new(),
            batches: Vec::new(),
            stats: ParseStats::default(),
            line_no: 0,
            days: DayCache::default(),
        }
    }

    /// Parses a block of whole lines, each found with memchr (a byte-by-byte split cost more
    /// than a line's fields).
    fn block(&mut self, text: &[u8]) -> Result<(), ParseError> {
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', text) {
            self.line(&text[start..end])?;
            start = end + 1;
        }
        if start < text.len() {
            // The stream's last line, without its newline.
            self.line(&text[start..])?;
        }
        Ok(())
    }

    /// A failure to read the stream, at the line that was to come next.
    fn read_error(&self, source: std::io::Error) -> ParseError {
        ParseError::Io { object: self.object.to_string(), line: self.line_no + 1, source }
    }

    fn line(&mut self, line: &[u8]) -> Result<(), ParseError> {
        self.line_no += 1;
        let mut text = line;
        while let [rest @ .., b'\n' | b'\r'] = text {
            text = rest;
        }
        if text.is_empty() {
            return Ok(());
        }
        if text[0] == b'#' {
            if let Some(names) = text.strip_prefix(b"#Fields:") {
                let names = String::from_utf8_lossy(names);
                self.fields = Some(FieldMap::from_header(&names).map_err(|field| ParseError::MissingField {
                    object: self.object.to_string(),
                    line: self.line_no,
                    field,
                })?);
            }
            return Ok(());
        }
        self.stats.lines += 1;
        let map = self.fields.as_ref().unwrap_or(&CURRENT_FIELD_MAP);
        let pushed = match parse_entry(text, map, &mut self.days) {
            Ok(Some(entry)) => self.builders.push(&entry),
            Ok(None) => {
                self.stats.lines_without_session += 1;
                return Ok(());
            }
            Err(why) => Err(why),
        };
        match pushed {
            Ok(()) => {
                self.stats.rows += 1;
                if self.builders.len >= BATCH_ROWS {
                    self.batches.push(finish(&mut self.builders, self.object)?);
                }
            }
            Err(why) => {
                self.stats.malformed_lines += 1;
                if self.stats.malformed_lines <= MAX_WARNINGS_PER_OBJECT {
                    tracing::warn!(object = self.object, line = self.line_no, reason = %why, "skipping malformed log line");
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<ParsedObject, ParseError> {
        if self.stats.malformed_lines > MAX_WARNINGS_PER_OBJECT {
            tracing::warn!(
                object = self.object,
                malformed_lines = self.stats.malformed_lines,
                "more malformed lines skipped than shown individually"
            );
        }
        if self.builders.len > 0 {
            self.batches.push(finish(&mut self.builders, self.object)?);
        }
        Ok(ParsedObject { batches: self.batches, stats: self.stats })
    }
}

fn finish(builders: &mut Builders, object: &str) -> Result<RecordBatch, ParseError> {
    builders.finish().map_err(|source| ParseError::Arrow { object: object.to_string(), source })
}

fn parse_entry<'a>(line: &'a [u8], map: &FieldMap, days: &mut DayCache) -> Result<Option<Entry<'a>>, Malformed> {
    let mut fields = Fields::default();
    // One memchr call per field costs more than the field's content: the leading fields are
    // found one by one, the tabs of the rest are counted in one pass (the line must have the
    // declared number of fields), and the trailing fields are found from the end.
    let mut start = 0;
    for i in 0..map.front_until {
        let Some(tab) = memchr::memchr(b'\t', &line[start..]).map(|at| start + at) else {
            return Err(Malformed::FieldCount { expected: map.field_count, found: i + 1 });
        };
        fields.set(map.role_at[i], &line[start..tab]);
        start = tab + 1;
    }
    let found = map.front_until + memchr::memchr_iter(b'\t', &line[start..]).count() + 1;
    if found != map.field_count {
        return Err(Malformed::FieldCount { expected: map.field_count, found });
    }
    let mut end = line.len();
    for i in (map.back_from..map.field_count).rev() {
        // Field i starts after the line's i-th tab; the count above guarantees it is there.
        let value_start =
            if i == map.front_until { start } else { memchr::memrchr(b'\t', &line[start..end]).map_or(start, |at| start + at + 1) };
        fields.set(map.role_at[i], &line[value_start..end]);
        end = value_start.saturating_sub(1);
    }
    let Fields { date, time, edge, bytes, ip, uri, status, referer, ua, range } = fields;
    // With the declared number of fields, every required role was seen (FieldMap checked the
    // header has them).
    let (Some(date), Some(time), Some(uri), Some(ip), Some(status), Some(bytes)) = (date, time, uri, ip, status, bytes) else {
        unreachable!("FieldMap guarantees required fields")
    };

    let day = days.days_since_epoch(date).ok_or(Malformed::Date)?;
    let secs = parse_hms(time).ok_or(Malformed::Time)?;
    let status = parse_status(status).ok_or(Malformed::Status)?;
    let bytes = match bytes {
        b"-" => None,
        digits => Some(parse_u64(digits).ok_or(Malformed::Bytes)? as i64),
    };
    let range_start = match range {
        None => None,
        Some(digits) => Some(parse_u64(digits).ok_or(Malformed::Range)? as i64),
    };
    let Some((session_id, object_path)) = split_session(uri) else {
        return Ok(None);
    };
    Ok(Some(Entry {
        epoch_s: day * 86_400 + secs,
        session_id,
        object_path,
        ip,
        status,
        bytes,
        edge,
        referer,
        user_agent_raw: ua,
        range_start,
    }))
}

/// The raw fields of one line that detection reads, by role.
#[derive(Default)]
struct Fields<'a> {
    date: Option<&'a [u8]>,
    time: Option<&'a [u8]>,
    edge: Option<&'a [u8]>,
    bytes: Option<&'a [u8]>,
    ip: Option<&'a [u8]>,
    uri: Option<&'a [u8]>,
    status: Option<&'a [u8]>,
    referer: Option<&'a [u8]>,
    ua: Option<&'a [u8]>,
    range: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    fn set(&mut self, role: Option<Role>, value: &'a [u8]) {
        match role {
            None => {}
            Some(Role::Date) => self.date = Some(value),
            Some(Role::Time) => self.time = Some(value),
            Some(Role::Edge) => self.edge = non_empty(value),
            Some(Role::Bytes) => self.bytes = Some(value),
            Some(Role::Ip) => self.ip = Some(value),
            Some(Role::UriStem) => self.uri = Some(value),
            Some(Role::Status) => self.status = Some(value),
            Some(Role::Referer) => self.referer = non_empty(value),
            Some(Role::UserAgent) => self.ua = non_empty(value),
            Some(Role::RangeStart) => self.range = non_empty(value),
        }
    }
}

fn non_empty(v: &[u8]) -> Option<&[u8]> {
    if v == b"-" || v.is_empty() { None } else { Some(v) }
}

/// Splits `/<session_id>.<jwt-header>.<jwt-payload>.<jwt-sig>/rest…` into the session id and
/// `/rest…`. The first path segment must have exactly four dot-separated parts (the token
/// layout of Secure Media Delivery at the Edge) and a non-empty session id.
pub fn split_session(uri: &[u8]) -> Option<(&[u8], &[u8])> {
    let path = uri.strip_prefix(b"/")?;
    let seg_end = memchr::memchr(b'/', path).unwrap_or(path.len());
    let (segment, rest) = path.split_at(seg_end);
    let mut dots = memchr::memchr_iter(b'.', segment);
    let first_dot = dots.next()?;
    if dots.count() != 2 || first_dot == 0 {
        return None;
    }
    Some((&segment[..first_dot], rest))
}

/// Decodes the percent-encoded user agent; CloudFront encodes some agents twice (`%2520`).
pub fn url_decode_user_agent(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    percent_decode_into(raw, out);
    // `%25` decodes to `%`: if the first pass produced a new escape, decode once more.
    if raw.windows(3).any(|w| w == b"%25") {
        let once = std::mem::take(out);
        percent_decode_into(&once, out);
    }
}

fn percent_decode_into(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%'
            && i + 2 < raw.len()
            && let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0')))
}

fn parse_status(v: &[u8]) -> Option<u16> {
    match parse_u64(v)? {
        s @ 100..=599 => Some(s as u16),
        // CloudFront logs 000 when the viewer closed the connection before a response.
        0 if v.len() == 3 => Some(0),
        _ => None,
    }
}

fn two_digits(v: &[u8]) -> Option<i64> {
    match v {
        [a @ b'0'..=b'9', b @ b'0'..=b'9'] => Some(i64::from((a - b'0') * 10 + (b - b'0'))),
        _ => None,
    }
}

fn parse_hms(v: &[u8]) -> Option<i64> {
    let [h1, h2, b':', m1, m2, b':', s1, s2] = v else { return None };
    let (h, m, s) = (two_digits(&[*h1, *h2])?, two_digits(&[*m1, *m2])?, two_digits(&[*s1, *s2])?);
    // 60 admits a leap second as logged.
    (h < 24 && m < 60 && s <= 60).then_some(h * 3600 + m * 60 + s)
}

/// Remembers the last date seen: a log file holds one or two dates, so parsing each line's
/// date is almost always a 10-byte comparison.
#[derive(Default)]
struct DayCache {
    last: [u8; 10],
    days: i64,
    valid: bool,
}

impl DayCache {
    fn days_since_epoch(&mut self, v: &[u8]) -> Option<i64> {
        if self.valid && v == self.last {
            return Some(self.days);
        }
        let days = parse_date(v)?;
        self.last.copy_from_slice(v);
        self.days = days;
        self.valid = true;
        Some(days)
    }
}

fn parse_date(v: &[u8]) -> Option<i64> {
    let [y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2] = v else { return None };
    let year = two_digits(&[*y1, *y2])? * 100 + two_digits(&[*y3, *y4])?;
    let month = two_digits(&[*m1, *m2])?;
    let day = two_digits(&[*d1, *d2])?;
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month as u32, day as u32)?;
    Some(i64::from((date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid")).num_days() as i32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::compute::cast;

    const SAMPLE: &str = include_str!("../../tests/data/cloudfront-docs-example.log");

    fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
        let col = cast(batch.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
        let col = col.as_string::<i32>();
        (0..col.len()).map(|i| col.is_valid(i).then(|| col.value(i).to_string())).collect()
    }

    fn line33(uri: &str, ua: &str) -> String {
        test_line(&[(0, "2026-11-20"), (1, "10:00:07"), (2, "FRA56-P1"), (3, "2048"), (4, "203.0.113.7"), (7, uri), (8, "206"), (10, ua)])
    }

    #[test]
    fn docs_example_has_no_session_lines_and_nothing_malformed() {
        let parsed = parse_log("docs.log", SAMPLE.as_bytes()).unwrap();
        assert_eq!(parsed.stats, ParseStats { lines: 6, malformed_lines: 0, lines_without_session: 6, rows: 0 });
    }

    #[test]
    fn session_token_line_becomes_a_row_with_decoded_user_agent() {
        let uri = "/s3ss10n_A.eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl/live/ch1/720p/seg_00042.ts";
        let text = format!("#Version: 1.0\n#Fields: {CURRENT_FIELDS}\n{}\n", line33(uri, "AppleCoreMedia/1.0.0.21A%2520(iPhone;%2520U)"));
        let parsed = parse_log("x.gz", text.as_bytes()).unwrap();
        assert_eq!(parsed.stats.rows, 1);
        let b = &parsed.batches[0];
        assert_eq!(strings(b, "session_id"), vec![Some("s3ss10n_A".into())]);
        assert_eq!(strings(b, "object_path"), vec![Some("/live/ch1/720p/seg_00042.ts".into())]);
        assert_eq!(strings(b, "user_agent"), vec![Some("AppleCoreMedia/1.0.0.21A (iPhone; U)".into())]);
        assert_eq!(strings(b, "referer"), vec![None], "`-` must be null");
        assert_eq!(strings(b, "edge"), vec![Some("FRA56-P1".into())]);
        let epoch = b.column_by_name("epoch_s").unwrap().as_primitive::<arrow::datatypes::Int64Type>();
        // 2026-11-20T10:00:07Z
        assert_eq!(epoch.value(0), 1_795_168_807);
        let status = b.column_by_name("status").unwrap().as_primitive::<arrow::datatypes::UInt16Type>();
        assert_eq!(status.value(0), 206);
    }

    #[test]
    fn older_24_field_layout_is_mapped_by_header() {
        let header = "date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status \
cs(Referer) cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type x-edge-request-id x-host-header \
cs-protocol cs-bytes time-taken x-forwarded-for ssl-protocol ssl-cipher x-edge-response-result-type \
cs-protocol-version";
        assert_eq!(header.split(' ').count(), 24);
        let line = "2014-05-23\t01:13:11\tFRA2\t182192\t192.0.2.10\tGET\td111111abcdef8.cloudfront.net\t\
/abc.h.p.s/vod/1080p/seg_1.ts\t200\thttps://pirate.example/\tVLC/3.0.18%20LibVLC/3.0.18\t-\t-\tHit\tid==\t\
d111111abcdef8.cloudfront.net\thttps\t89\t0.001\t-\tTLSv1.2\tECDHE-RSA-AES128-GCM-SHA256\tHit\tHTTP/1.1";
        let text = format!("#Version: 1.0\n#Fields: {header}\n{line}\n");
        let parsed = parse_log("old.gz", text.as_bytes()).unwrap();
        assert_eq!(parsed.stats.rows, 1, "{:?}", parsed.stats);
        let b = &parsed.batches[0];
        assert_eq!(strings(b, "session_id"), vec![Some("abc".into())]);
        assert_eq!(strings(b, "referer"), vec![Some("https://pirate.example/".into())]);
        assert_eq!(strings(b, "user_agent"), vec![Some("VLC/3.0.18 LibVLC/3.0.18".into())]);
    }

    #[test]
    fn fields_are_found_from_both_ends_and_every_tab_is_counted() {
        // The range start sits near the end of a line and is found from there; a field more
        // or less anywhere in between makes the line malformed, not misread.
        let mut fields: Vec<String> = line33("/a.b.c.d/x.ts", "curl/8").split('\t').map(str::to_string).collect();
        fields[31] = "1048576".into();
        let line = fields.join("\t");
        let mut days = DayCache::default();
        let entry = parse_entry(line.as_bytes(), &CURRENT_FIELD_MAP, &mut days).unwrap().unwrap();
        assert_eq!((entry.range_start, entry.bytes, entry.status), (Some(1_048_576), Some(2048), 206));
        assert_eq!(entry.ip, b"203.0.113.7");
        let extra_in_the_middle = line.replacen("\t-\t", "\t-\t-\t", 1);
        let missing_at_the_end = line.rsplit_once('\t').unwrap().0.to_string();
        for (text, found) in [(extra_in_the_middle, 34), (missing_at_the_end, 32), ("2026-11-20\t10:00:07".to_string(), 2)] {
            let err = parse_entry(text.as_bytes(), &CURRENT_FIELD_MAP, &mut days).err();
            assert_eq!(err, Some(Malformed::FieldCount { expected: 33, found }), "{text}");
        }
        // A layout whose needed fields sit at both ends, one of them the very last field.
        let map = FieldMap::from_header("cs-uri-stem date x a b c d e f time c-ip sc-status sc-bytes").unwrap();
        assert_eq!((map.front_until, map.back_from), (2, 9));
        let line = "/s.h.p.sig/live/x.ts\t2026-11-20\t1\t2\t3\t4\t5\t6\t7\t10:00:07\t198.51.100.1\t200\t99";
        let entry = parse_entry(line.as_bytes(), &map, &mut days).unwrap().unwrap();
        assert_eq!((entry.session_id, entry.ip, entry.status, entry.bytes), (&b"s"[..], &b"198.51.100.1"[..], 200, Some(99)));
        assert_eq!(entry.epoch_s % 86_400, 36_007);
    }

    #[test]
    fn malformed_lines_are_counted_and_skipped_not_fatal() {
        let good = line33("/a.b.c.d/x.ts", "curl/8");
        let short = "2026-11-20\t10:00:07\tFRA56\t12";
        let bad_date = good.replacen("2026-11-20", "2026-13-40", 1);
        let bad_status = good.replacen("\t206\t", "\tOK\t", 1);
        let bad_bytes = good.replacen("\t2048\t", "\t2k\t", 1);
        let text =
            format!("#Version: 1.0\n#Fields: {CURRENT_FIELDS}\n{good}\n{short}\n{bad_date}\n{bad_status}\n{bad_bytes}\n\n{good}\r\n");
        let parsed = parse_log("mixed.gz", text.as_bytes()).unwrap();
        assert_eq!(parsed.stats, ParseStats { lines: 6, malformed_lines: 4, lines_without_session: 0, rows: 2 });
    }

    #[test]
    fn header_without_a_needed_field_is_an_error_naming_object_and_field() {
        let text = "#Version: 1.0\n#Fields: date time c-ip\n";
        let err = parse_log("logs/E1.2026-11-20-10.a.gz", text.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("logs/E1.2026-11-20-10.a.gz"), "{err}");
        assert!(err.contains("sc-bytes"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn session_needs_four_dot_parts_in_the_first_segment() {
        assert_eq!(split_session(b"/id.h.p.s/a/b.ts"), Some((&b"id"[..], &b"/a/b.ts"[..])));
        assert_eq!(split_session(b"/id.h.p.s"), Some((&b"id"[..], &b""[..])));
        assert_eq!(split_session(b"/id.h.p/a.ts"), None);
        assert_eq!(split_session(b"/id.h.p.s.x/a.ts"), None);
        assert_eq!(split_session(b"/.h.p.s/a.ts"), None);
        assert_eq!(split_session(b"/index.html"), None);
        assert_eq!(split_session(b"/live/id.h.p.s/a.ts"), None, "token must be the first segment");
        assert_eq!(split_session(b"id.h.p.s/a.ts"), None);
    }

    #[test]
    fn user_agent_decoding_handles_single_double_and_stray_percent() {
        let mut out = Vec::new();
        url_decode_user_agent(b"Mozilla/5.0%20(X11)", &mut out);
        assert_eq!(out, b"Mozilla/5.0 (X11)");
        url_decode_user_agent(b"Lavf/60.3.100%2520x", &mut out);
        assert_eq!(out, b"Lavf/60.3.100 x");
        url_decode_user_agent(b"100%", &mut out);
        assert_eq!(out, b"100%");
        url_decode_user_agent(b"a%zzb%4", &mut out);
        assert_eq!(out, b"a%zzb%4");
    }

    #[test]
    fn object_paths_split_into_title_rendition_file_and_number() {
        assert_eq!(path_parts("/live/ch1/720p/seg_000042.ts"), ("/live/ch1", "720p", "seg_000042.ts", Some(42)));
        assert_eq!(path_parts("/vod/t/1080p/chunk_448792204.m4s"), ("/vod/t", "1080p", "chunk_448792204.m4s", Some(448792204)));
        assert_eq!(path_parts("/vod/t/720p/media.mp4"), ("/vod/t", "720p", "media.mp4", None));
        assert_eq!(path_parts("/master.m3u8"), ("", "", "master.m3u8", None));
        assert_eq!(path_parts(""), ("", "", "", None));
    }

    #[test]
    fn path_parts_are_stored_once_per_distinct_value_and_line_up_with_rows() {
        let a = "/a.h.p.s/live/ch1/720p/seg_000001.ts";
        let b = "/a.h.p.s/live/ch1/1080p/seg_000002.ts";
        let text = format!("#Version: 1.0\n#Fields: {CURRENT_FIELDS}\n{}\n{}\n{}\n", line33(a, "x"), line33(b, "x"), line33(a, "x"));
        let parsed = parse_log("p.gz", text.as_bytes()).unwrap();
        let batch = &parsed.batches[0];
        assert_eq!(strings(batch, "rendition"), vec![Some("720p".into()), Some("1080p".into()), Some("720p".into())]);
        assert_eq!(strings(batch, "title"), vec![Some("/live/ch1".into()); 3]);
        let numbers = batch.column_by_name("file_number").unwrap().as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(numbers.values().to_vec(), vec![1, 2, 1]);
        // Each part's dictionary holds each distinct value once, however many paths share it.
        let title = batch.column_by_name("title").unwrap().as_dictionary::<Int32Type>();
        assert_eq!(title.values().len(), 1, "one title for both paths");
        let rendition = batch.column_by_name("rendition").unwrap().as_dictionary::<Int32Type>();
        assert_eq!(rendition.values().len(), 2, "one value per distinct rendition");
    }

    #[test]
    fn lines_straddling_blocks_and_a_last_line_without_newline_are_all_read() {
        // Several blocks' worth of lines, so many lines cross a block boundary, plus one line
        // longer than a whole block (a huge user agent), and no newline at the very end.
        let line = line33("/s.h.p.s/live/ch1/720p/seg_000001.ts", "x");
        let long = line33("/s.h.p.s/live/ch1/720p/seg_000002.ts", &"A".repeat(BLOCK_BYTES + 17));
        let count = 3 * BLOCK_BYTES / line.len();
        let mut text = format!("#Version: 1.0\n#Fields: {CURRENT_FIELDS}\n");
        for i in 0..count {
            text.push_str(if i == count / 2 { &long } else { &line });
            text.push('\n');
        }
        text.push_str(&line);
        let parsed = parse_log("blocks.gz", text.as_bytes()).unwrap();
        assert_eq!(
            parsed.stats,
            ParseStats { lines: count as u64 + 1, malformed_lines: 0, lines_without_session: 0, rows: count as u64 + 1 }
        );
        // Reading on its own thread hands the parser the same lines: same rows, same batches.
        let pipelined = parse_log_pipelined("blocks.gz", text.as_bytes()).unwrap();
        assert_eq!(pipelined.stats, parsed.stats);
        assert_eq!(pipelined.batches, parsed.batches);
    }

    /// Runs `parse` on a thread and waits at most a minute: a reading thread left blocked
    /// would hang the test instead of failing it.
    fn within_a_minute<T: Send + 'static>(parse: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(parse()));
        rx.recv_timeout(std::time::Duration::from_secs(60)).expect("parsing finished")
    }

    #[test]
    fn pipelined_parse_returns_a_header_error_while_the_reader_still_has_blocks_to_give() {
        // The parser stops at line 2 with most of the stream unread and the read-ahead full:
        // the reading thread must notice and stop, or the parse never returns.
        let line = line33("/s.h.p.s/live/ch1/720p/seg_000001.ts", "x");
        let mut text = "#Version: 1.0\n#Fields: date time c-ip\n".to_string();
        while text.len() < 8 * BLOCK_BYTES {
            text.push_str(&line);
            text.push('\n');
        }
        let err = within_a_minute(move || parse_log_pipelined("logs/E1.2026-11-20-10.a.gz", text.as_bytes()).unwrap_err().to_string());
        assert!(err.contains("sc-bytes") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn pipelined_parse_reports_a_read_failure_with_the_line_it_stopped_at() {
        // A stream that fails after three whole lines, as a truncated gzip object does.
        struct FailsAfter(std::io::Cursor<Vec<u8>>);
        impl Read for FailsAfter {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                match self.0.read(buf)? {
                    0 => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "corrupt deflate stream")),
                    n => Ok(n),
                }
            }
        }
        let line = line33("/s.h.p.s/live/ch1/720p/seg_000001.ts", "x");
        let text = format!("#Version: 1.0\n#Fields: {CURRENT_FIELDS}\n{line}\n{line}\n{line}\n");
        let err = within_a_minute(move || {
            parse_log_pipelined("logs/E1.2026-11-20-10.b.gz", FailsAfter(std::io::Cursor::new(text.into_bytes()))).unwrap_err().to_string()
        });
        assert!(err.contains("logs/E1.2026-11-20-10.b.gz") && err.contains("line 6") && err.contains("corrupt deflate stream"), "{err}");
    }

    #[test]
    fn a_corrupt_gzip_stream_or_header_makes_an_object_unreadable_but_a_failed_fetch_does_not() {
        use std::io::Write;
        let line = line33("/s.h.p.s/live/ch1/720p/seg_000001.ts", "x");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(format!("#Version: 1.0\n#Fields: {CURRENT_FIELDS}\n{}\n", [line.as_str(); 50].join("\n")).as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let truncated = parse_log("t.gz", flate2::read::MultiGzDecoder::new(&gz[..gz.len() / 2])).unwrap_err();
        let mut flipped = gz.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xff;
        // A flipped bit is caught by the inflater or, at the latest, by the gzip CRC.
        let corrupt = parse_log("c.gz", flate2::read::MultiGzDecoder::new(&flipped[..])).unwrap_err();
        let no_header = parse_log("h.log", "#Version: 1.0\n#Fields: date time\n".as_bytes()).unwrap_err();
        assert!(truncated.is_unreadable_content(), "{truncated}");
        assert!(no_header.is_unreadable_content(), "{no_header}");
        assert!(corrupt.is_unreadable_content(), "{corrupt}");
        // How the object reader hands on a request that failed after its retries.
        let fetch = object_store::Error::Generic { store: "S3", source: "connection reset".into() };
        let failed_fetch = ParseError::Io { object: "f.gz".into(), line: 3, source: std::io::Error::other(fetch) };
        assert!(!failed_fetch.is_unreadable_content(), "a failed fetch fails the run");
    }

    #[test]
    fn a_line_with_a_non_utf8_field_is_skipped_and_later_rows_keep_their_path_parts() {
        // The rejected line brings a new path before its bad address is seen: the parts of
        // the paths that follow must still line up with their rows.
        let first = line33("/s.h.p.s/live/ch1/720p/seg_000001.ts", "x");
        let bad = line33("/s.h.p.s/live/ch1/1080p/seg_000002.ts", "x").replacen("203.0.113.7", "203.0.113.\u{fffd}", 1);
        let mut bad = bad.into_bytes();
        let at = bad.windows(3).position(|w| w == "\u{fffd}".as_bytes()).unwrap();
        bad.splice(at..at + 3, [0xff]);
        let after = line33("/s.h.p.s/live/ch1/480p/seg_000003.ts", "x");
        let mut text = format!("#Version: 1.0\n#Fields: {CURRENT_FIELDS}\n{first}\n").into_bytes();
        text.extend_from_slice(&bad);
        text.extend_from_slice(format!("\n{after}\n").as_bytes());
        let parsed = parse_log("utf8.gz", &text[..]).unwrap();
        assert_eq!(parsed.stats, ParseStats { lines: 3, malformed_lines: 1, lines_without_session: 0, rows: 2 });
        let batch = &parsed.batches[0];
        assert_eq!(strings(batch, "rendition"), vec![Some("720p".into()), Some("480p".into())]);
        assert_eq!(strings(batch, "file"), vec![Some("seg_000001.ts".into()), Some("seg_000003.ts".into())]);
        assert_eq!(strings(batch, "c_ip"), vec![Some("203.0.113.7".into()); 2]);
    }

    #[test]
    fn user_agents_are_decoded_per_distinct_raw_value_within_and_across_batches() {
        // The same raw agent many times, in more than one batch, and two spellings of one agent.
        let a = line33("/s.h.p.s/live/ch1/720p/seg_000001.ts", "VLC/3.0%2520LibVLC");
        let b = line33("/s.h.p.s/live/ch1/720p/seg_000001.ts", "VLC/3.0%20LibVLC");
        let mut text = format!("#Version: 1.0\n#Fields: {CURRENT_FIELDS}\n");
        for i in 0..BATCH_ROWS + 3 {
            text.push_str(if i % 2 == 0 { &a } else { &b });
            text.push('\n');
        }
        let parsed = parse_log("ua.gz", text.as_bytes()).unwrap();
        assert_eq!(parsed.batches.len(), 2);
        for batch in &parsed.batches {
            let agents = strings(batch, "user_agent");
            assert!(agents.iter().all(|ua| ua.as_deref() == Some("VLC/3.0 LibVLC")), "{:?}", &agents[..4]);
        }
    }

    #[test]
    fn dates_and_times_are_validated() {
        assert_eq!(parse_date(b"1970-01-02"), Some(1));
        assert_eq!(parse_date(b"2024-02-30"), None);
        assert_eq!(parse_hms(b"23:59:60"), Some(86_400));
        assert_eq!(parse_hms(b"24:00:00"), None);
        assert_eq!(parse_hms(b"1:00:00"), None);
        assert_eq!(parse_status(b"000"), Some(0));
        assert_eq!(parse_status(b"99"), None);
    }

    /// Real lines damaged every way one byte can damage them: cut short at each byte, each
    /// byte dropped, and each byte replaced by a separator, an escape, a non-UTF-8 byte or
    /// a digit. Every line must be counted once (as a row, malformed, or without a session),
    /// and none may panic the parser, whichever reader hands it the text.
    #[test]
    fn real_lines_damaged_byte_by_byte_are_each_counted_and_never_panic() {
        let gz = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/logs/E2REVOKDSAMPLE.2026-11-20-10.a808e452.gz")).unwrap();
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&gz[..]).read_to_string(&mut text).unwrap();
        let (header, body): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| l.starts_with('#'));
        assert_eq!(header.len(), 2, "a #Version and a #Fields line");
        // Lines of every kind the sample has: the first of each status (000 for an aborted
        // request, 206 with a range, 5xx), a few of the rest, and every 1000th.
        let mut statuses = std::collections::HashSet::new();
        let originals: Vec<&str> = body
            .iter()
            .enumerate()
            .filter(|(i, l)| *i < 8 || i % 1000 == 0 || statuses.insert(l.split('\t').nth(8)))
            .map(|(_, l)| *l)
            .collect();
        assert!(statuses.len() >= 5 && originals.len() < 40, "{} statuses, {} lines", statuses.len(), originals.len());
        let replacements = [b'\t', b'\n', b'\r', b'%', b'.', b'/', b'-', b'0', b'9', b' ', b':', 0xff, 0xc3];
        for original in originals {
            let line = original.as_bytes();
            let mut damaged = format!("{}\n{}\n", header[0], header[1]).into_bytes();
            let mut add = |l: &[u8]| {
                damaged.extend_from_slice(l);
                damaged.push(b'\n');
            };
            for i in 0..line.len() {
                add(&line[..i]);
                add(&[&line[..i], &line[i + 1..]].concat());
                for &r in &replacements {
                    let mut l = line.to_vec();
                    l[i] = r;
                    add(&l);
                }
            }
            let text_lines = damaged.split(|&b| b == b'\n').skip(2).filter(|l| !l.is_empty() && *l != b"\r").count() as u64;
            for parsed in [parse_log("damaged.gz", &damaged[..]), parse_log_pipelined("damaged.gz", &damaged[..])] {
                let stats = parsed.unwrap().stats;
                assert_eq!(stats.rows + stats.malformed_lines + stats.lines_without_session, stats.lines, "{original}");
                assert_eq!(stats.lines, text_lines, "{original}");
            }
        }
    }
}
