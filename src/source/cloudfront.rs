//! CloudFront standard log format → Arrow.
//!
//! Columns are located through the file's `#Fields:` header, so current 33-field files and
//! older 24/26-field files are read alike. Only the columns detection needs are kept, and the
//! media URL is split at parse time into the session id and the path after the token: the
//! JWT itself (hundreds of bytes a line) never reaches memory.
//!
//! A line that cannot be read exactly is counted and skipped, never guessed at.

use std::io::BufRead;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Int64Builder, RecordBatch, StringDictionaryBuilder, UInt16Builder,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};

/// The `#Fields:` line of current (33-field) files, assumed when a file has no header.
pub const CURRENT_FIELDS: &str = "date time x-edge-location sc-bytes c-ip cs-method cs(Host) \
cs-uri-stem sc-status cs(Referer) cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type \
x-edge-request-id x-host-header cs-protocol cs-bytes time-taken x-forwarded-for ssl-protocol \
ssl-cipher x-edge-response-result-type cs-protocol-version fle-status fle-encrypted-fields \
c-port time-to-first-byte x-edge-detailed-result-type sc-content-type sc-content-len \
sc-range-start sc-range-end";

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
    MissingField {
        object: String,
        line: u64,
        field: &'static str,
    },
    #[error("{object}: building Arrow batch: {source}")]
    Arrow {
        object: String,
        #[source]
        source: arrow::error::ArrowError,
    },
}

/// Where each needed column sits in a line, from the `#Fields:` header.
#[derive(Debug, Clone)]
struct FieldMap {
    field_count: usize,
    /// For each position in a line, which needed column it feeds (if any).
    role_at: Vec<Option<Role>>,
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
        Ok(FieldMap { field_count: names.len(), role_at })
    }
}

static CURRENT_FIELD_MAP: LazyLock<FieldMap> =
    LazyLock::new(|| FieldMap::from_header(CURRENT_FIELDS).expect("current layout is complete"));

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

/// The fields of one line that detection keeps, borrowed from the line.
struct Entry<'a> {
    epoch_s: i64,
    session_id: &'a str,
    object_path: &'a str,
    ip: &'a str,
    status: u16,
    bytes: Option<i64>,
    edge: Option<&'a str>,
    referer: Option<&'a str>,
    user_agent_raw: Option<&'a [u8]>,
    range_start: Option<i64>,
}

/// The parts of one distinct object path, computed once per batch dictionary entry.
struct PathParts {
    title: String,
    rendition: String,
    file: String,
    file_number: Option<i64>,
}

/// Splits `<title>/<rendition>/<file>` from the right.
pub fn path_parts(path: &str) -> (&str, &str, &str, Option<i64>) {
    let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
    let (title, rendition) = dir.rsplit_once('/').unwrap_or(("", dir));
    let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    let digits = stem.bytes().rev().take_while(u8::is_ascii_digit).count();
    let file_number = (digits > 0 && digits <= 18).then(|| stem[stem.len() - digits..].parse().ok()).flatten();
    (title, rendition, file, file_number)
}

/// Accumulates rows of the `requests` table.
struct Builders {
    epoch_s: Int64Builder,
    session_id: StringDictionaryBuilder<Int32Type>,
    object_path: StringDictionaryBuilder<Int32Type>,
    ip: StringDictionaryBuilder<Int32Type>,
    status: UInt16Builder,
    bytes: Int64Builder,
    edge: StringDictionaryBuilder<Int32Type>,
    referer: StringDictionaryBuilder<Int32Type>,
    user_agent: StringDictionaryBuilder<Int32Type>,
    range_start: Int64Builder,
    /// Parts of each object path in this batch's dictionary, by dictionary key.
    path_parts: Vec<PathParts>,
    file_number: Int64Builder,
    len: usize,
}

impl Builders {
    fn new() -> Self {
        let dict = || StringDictionaryBuilder::<Int32Type>::new();
        Builders {
            epoch_s: Int64Builder::with_capacity(BATCH_ROWS),
            session_id: dict(),
            object_path: dict(),
            ip: dict(),
            status: UInt16Builder::with_capacity(BATCH_ROWS),
            bytes: Int64Builder::with_capacity(BATCH_ROWS),
            edge: dict(),
            referer: dict(),
            user_agent: dict(),
            range_start: Int64Builder::with_capacity(BATCH_ROWS),
            path_parts: Vec::new(),
            file_number: Int64Builder::with_capacity(BATCH_ROWS),
            len: 0,
        }
    }

    fn push(&mut self, e: &Entry<'_>, ua_scratch: &mut Vec<u8>) {
        self.epoch_s.append_value(e.epoch_s);
        self.session_id.append_value(e.session_id);
        let key = self.object_path.append(e.object_path).expect("fewer than 2^31 distinct paths per batch") as usize;
        if key == self.path_parts.len() {
            let (title, rendition, file, file_number) = path_parts(e.object_path);
            self.path_parts.push(PathParts {
                title: title.to_string(),
                rendition: rendition.to_string(),
                file: file.to_string(),
                file_number,
            });
        }
        self.file_number.append_option(self.path_parts[key].file_number);
        self.ip.append_value(e.ip);
        self.status.append_value(e.status);
        self.bytes.append_option(e.bytes);
        self.edge.append_option(e.edge);
        self.referer.append_option(e.referer);
        match e.user_agent_raw {
            Some(raw) => {
                url_decode_user_agent(raw, ua_scratch);
                // Decoding can produce invalid UTF-8 from hostile input; keep it visible but safe.
                self.user_agent.append_value(String::from_utf8_lossy(ua_scratch));
            }
            None => self.user_agent.append_null(),
        }
        self.range_start.append_option(e.range_start);
        self.len += 1;
    }

    fn finish(&mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let object_path = self.object_path.finish();
        // The path parts share the path column's keys: one value per distinct path.
        let parts = std::mem::take(&mut self.path_parts);
        let by_path = |part: fn(&PathParts) -> &str| -> Result<ArrayRef, arrow::error::ArrowError> {
            let values = arrow::array::StringArray::from_iter_values(parts.iter().map(part));
            Ok(Arc::new(arrow::array::DictionaryArray::<Int32Type>::try_new(
                object_path.keys().clone(),
                Arc::new(values),
            )?))
        };
        let (title, rendition, file) = (by_path(|p| &p.title)?, by_path(|p| &p.rendition)?, by_path(|p| &p.file)?);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.epoch_s.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(object_path),
            Arc::new(self.ip.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.bytes.finish()),
            Arc::new(self.edge.finish()),
            Arc::new(self.referer.finish()),
            Arc::new(self.user_agent.finish()),
            Arc::new(self.range_start.finish()),
            title,
            rendition,
            file,
            Arc::new(self.file_number.finish()),
        ];
        self.len = 0;
        RecordBatch::try_new(REQUESTS_SCHEMA.clone(), columns)
    }
}

/// The result of parsing one log object.
#[derive(Debug)]
pub struct ParsedObject {
    pub batches: Vec<RecordBatch>,
    pub stats: ParseStats,
}

/// Parses a whole (already decompressed) CloudFront log stream.
///
/// `object` names the source in warnings and errors. Malformed lines are counted, the first
/// few logged with their line number, and skipped.
pub fn parse_log<R: BufRead>(object: &str, mut reader: R) -> Result<ParsedObject, ParseError> {
    let mut fields: Option<FieldMap> = None;
    let mut builders = Builders::new();
    let mut batches = Vec::new();
    let mut stats = ParseStats::default();
    let mut line = Vec::with_capacity(1024);
    let mut ua_scratch = Vec::with_capacity(256);
    let mut line_no: u64 = 0;
    let mut days = DayCache::default();

    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| ParseError::Io { object: object.to_string(), line: line_no + 1, source })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let mut text: &[u8] = &line;
        while let [rest @ .., b'\n' | b'\r'] = text {
            text = rest;
        }
        if text.is_empty() {
            continue;
        }
        if text[0] == b'#' {
            if let Some(names) = text.strip_prefix(b"#Fields:") {
                let names = String::from_utf8_lossy(names);
                fields = Some(FieldMap::from_header(&names).map_err(|field| {
                    ParseError::MissingField { object: object.to_string(), line: line_no, field }
                })?);
            }
            continue;
        }
        stats.lines += 1;
        let map = fields.as_ref().unwrap_or(&CURRENT_FIELD_MAP);
        match parse_entry(text, map, &mut days) {
            Ok(Some(entry)) => {
                builders.push(&entry, &mut ua_scratch);
                stats.rows += 1;
                if builders.len >= BATCH_ROWS {
                    batches.push(finish(&mut builders, object)?);
                }
            }
            Ok(None) => stats.lines_without_session += 1,
            Err(why) => {
                stats.malformed_lines += 1;
                if stats.malformed_lines <= MAX_WARNINGS_PER_OBJECT {
                    tracing::warn!(object, line = line_no, reason = %why, "skipping malformed log line");
                }
            }
        }
    }
    if stats.malformed_lines > MAX_WARNINGS_PER_OBJECT {
        tracing::warn!(
            object,
            malformed_lines = stats.malformed_lines,
            "more malformed lines skipped than shown individually"
        );
    }
    if builders.len > 0 {
        batches.push(finish(&mut builders, object)?);
    }
    Ok(ParsedObject { batches, stats })
}

fn finish(builders: &mut Builders, object: &str) -> Result<RecordBatch, ParseError> {
    builders
        .finish()
        .map_err(|source| ParseError::Arrow { object: object.to_string(), source })
}

fn parse_entry<'a>(
    line: &'a [u8],
    map: &FieldMap,
    days: &mut DayCache,
) -> Result<Option<Entry<'a>>, Malformed> {
    let (mut date, mut time, mut uri, mut ip, mut status, mut bytes) = (None, None, None, None, None, None);
    let (mut edge, mut referer, mut ua, mut range) = (None, None, None, None);
    let mut found = 0;
    let mut start = 0;
    // memchr finds the tabs with SIMD: a line is ~700 bytes, most of it fields nobody reads.
    let mut tabs = memchr::memchr_iter(b'\t', line);
    loop {
        let end = tabs.next();
        let value = &line[start..end.unwrap_or(line.len())];
        let i = found;
        found += 1;
        match map.role_at.get(i).copied().flatten() {
            None => {}
            Some(Role::Date) => date = Some(value),
            Some(Role::Time) => time = Some(value),
            Some(Role::Edge) => edge = non_empty(value),
            Some(Role::Bytes) => bytes = Some(value),
            Some(Role::Ip) => ip = Some(value),
            Some(Role::UriStem) => uri = Some(value),
            Some(Role::Status) => status = Some(value),
            Some(Role::Referer) => referer = non_empty(value),
            Some(Role::UserAgent) => ua = non_empty(value),
            Some(Role::RangeStart) => range = non_empty(value),
        }
        match end {
            Some(tab) => start = tab + 1,
            None => break,
        }
    }
    if found != map.field_count {
        return Err(Malformed::FieldCount { expected: map.field_count, found });
    }
    // With the declared number of fields, every required role was seen (FieldMap checked the
    // header has them).
    let (Some(date), Some(time), Some(uri), Some(ip), Some(status), Some(bytes)) =
        (date, time, uri, ip, status, bytes)
    else {
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
    let utf8 = |b: &'a [u8]| std::str::from_utf8(b).map_err(|_| Malformed::NotUtf8);
    Ok(Some(Entry {
        epoch_s: day * 86_400 + secs,
        session_id: utf8(session_id)?,
        object_path: utf8(object_path)?,
        ip: utf8(ip)?,
        status,
        bytes,
        edge: edge.map(utf8).transpose()?,
        referer: referer.map(utf8).transpose()?,
        user_agent_raw: ua,
        range_start,
    }))
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
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
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
    digits.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
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
    Some(i64::from(
        (date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid")).num_days() as i32,
    ))
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
        let mut f: Vec<&str> = CURRENT_FIELDS.split(' ').map(|_| "-").collect();
        f[0] = "2026-11-20";
        f[1] = "10:00:07";
        f[2] = "FRA56-P1";
        f[3] = "2048";
        f[4] = "203.0.113.7";
        f[7] = uri;
        f[8] = "206";
        f[10] = ua;
        f.join("\t")
    }

    #[test]
    fn docs_example_has_no_session_lines_and_nothing_malformed() {
        let parsed = parse_log("docs.log", SAMPLE.as_bytes()).unwrap();
        assert_eq!(
            parsed.stats,
            ParseStats { lines: 6, malformed_lines: 0, lines_without_session: 6, rows: 0 }
        );
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
    fn malformed_lines_are_counted_and_skipped_not_fatal() {
        let good = line33("/a.b.c.d/x.ts", "curl/8");
        let short = "2026-11-20\t10:00:07\tFRA56\t12";
        let bad_date = good.replacen("2026-11-20", "2026-13-40", 1);
        let bad_status = good.replacen("\t206\t", "\tOK\t", 1);
        let bad_bytes = good.replacen("\t2048\t", "\t2k\t", 1);
        let text = format!(
            "#Version: 1.0\n#Fields: {CURRENT_FIELDS}\n{good}\n{short}\n{bad_date}\n{bad_status}\n{bad_bytes}\n\n{good}\r\n"
        );
        let parsed = parse_log("mixed.gz", text.as_bytes()).unwrap();
        assert_eq!(
            parsed.stats,
            ParseStats { lines: 6, malformed_lines: 4, lines_without_session: 0, rows: 2 }
        );
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
    fn path_parts_are_stored_once_per_distinct_path_and_line_up_with_rows() {
        let a = "/a.h.p.s/live/ch1/720p/seg_000001.ts";
        let b = "/a.h.p.s/live/ch1/1080p/seg_000002.ts";
        let text = format!("#Version: 1.0\n#Fields: {CURRENT_FIELDS}\n{}\n{}\n{}\n", line33(a, "x"), line33(b, "x"), line33(a, "x"));
        let parsed = parse_log("p.gz", text.as_bytes()).unwrap();
        let batch = &parsed.batches[0];
        assert_eq!(strings(batch, "rendition"), vec![Some("720p".into()), Some("1080p".into()), Some("720p".into())]);
        assert_eq!(strings(batch, "title"), vec![Some("/live/ch1".into()); 3]);
        let numbers = batch.column_by_name("file_number").unwrap().as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(numbers.values().to_vec(), vec![1, 2, 1]);
        let title = batch.column_by_name("title").unwrap().as_dictionary::<Int32Type>();
        assert_eq!(title.values().len(), 2, "one value per distinct path");
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
}
