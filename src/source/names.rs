//! CloudFront log object names (`<prefix>/<DIST>.YYYY-MM-DD-HH.<id>.gz`) and the analysis
//! window, in whole UTC hours since the epoch.

use std::ops::RangeInclusive;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use object_store::path::Path as ObjectPath;

/// Hours since the Unix epoch, UTC.
pub type HourIndex = i64;

/// The half-open interval `[start, end)` of request times one run analyses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    pub fn ending_at(end: DateTime<Utc>, lookback: Duration) -> Window {
        let lookback = chrono::Duration::from_std(lookback).expect("lookback fits");
        Window { start: end - lookback, end }
    }

    /// File hours that can hold entries of this window. A file named for hour H holds requests
    /// that started in H, stamped with the time they finished: `[H, H + 1h + longest request)`.
    pub fn file_hours(&self, max_request_duration: Duration) -> RangeInclusive<HourIndex> {
        let overrun = max_request_duration.as_secs() as i64;
        // H is needed iff H*3600 + 3600 + overrun > start.
        let first = (self.start.timestamp() - overrun).div_euclid(3600);
        // `end` is exclusive.
        let last = (self.end.timestamp() - 1).div_euclid(3600);
        first..=last.max(first)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogObjectName {
    pub distribution: String,
    pub hour: HourIndex,
}

impl LogObjectName {
    /// Parses the file name part of a key; `None` for names CloudFront does not write.
    pub fn parse(location: &ObjectPath) -> Option<LogObjectName> {
        let file = location.filename()?;
        let mut parts = file.split('.');
        let distribution = parts.next()?;
        let stamp = parts.next()?;
        parts.next()?; // the unique id
        if distribution.is_empty() || !distribution.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let hour = parse_hour_stamp(stamp)?;
        Some(LogObjectName { distribution: distribution.to_string(), hour })
    }
}

/// `YYYY-MM-DD-HH` → hours since the epoch.
pub fn parse_hour_stamp(stamp: &str) -> Option<HourIndex> {
    let b = stamp.as_bytes();
    if b.len() != 13 || b[4] != b'-' || b[7] != b'-' || b[10] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = &stamp[r];
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok()).flatten()
    };
    let (y, m, d, h) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?);
    let t = Utc.with_ymd_and_hms(y as i32, m, d, h, 0, 0).single()?;
    Some(t.timestamp() / 3600)
}

pub fn hour_stamp(hour: HourIndex) -> String {
    let t = Utc.timestamp_opt(hour * 3600, 0).single().expect("hour in range");
    t.format("%Y-%m-%d-%H").to_string()
}

/// The key prefix of a distribution's files for an hour: `<prefix>/<DIST>.YYYY-MM-DD-HH`.
pub fn hour_key(prefix: &ObjectPath, distribution: &str, hour: HourIndex) -> String {
    let stamp = hour_stamp(hour);
    if prefix.as_ref().is_empty() { format!("{distribution}.{stamp}") } else { format!("{prefix}/{distribution}.{stamp}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_cloudfront_names_only() {
        let n = LogObjectName::parse(&ObjectPath::from("logs/E2ABC.2026-11-20-10.0a1b2c3d.gz")).unwrap();
        assert_eq!(n.distribution, "E2ABC");
        assert_eq!(hour_stamp(n.hour), "2026-11-20-10");
        assert!(LogObjectName::parse(&ObjectPath::from("cloudfront-docs-example.log")).is_none());
        assert!(LogObjectName::parse(&ObjectPath::from("E2ABC.2026-11-20.x.gz")).is_none());
        assert!(LogObjectName::parse(&ObjectPath::from("E2ABC.2026-13-20-10.x.gz")).is_none());
    }

    #[test]
    fn window_inside_one_hour_includes_previous_hour_only_near_its_start() {
        let overrun = Duration::from_secs(300);
        // 10:20-10:30: lines of the 09 file end by 10:05, before the window.
        let w = Window::ending_at(at("2026-11-20T10:30:00Z"), Duration::from_secs(600));
        let hours = w.file_hours(overrun);
        assert_eq!((hour_stamp(*hours.start()), hour_stamp(*hours.end())), ("2026-11-20-10".into(), "2026-11-20-10".into()));
        // 10:02-10:12: the 09 file can still hold requests that finished after 10:02.
        let w = Window::ending_at(at("2026-11-20T10:12:00Z"), Duration::from_secs(600));
        let hours = w.file_hours(overrun);
        assert_eq!(hour_stamp(*hours.start()), "2026-11-20-09");
        assert_eq!(hour_stamp(*hours.end()), "2026-11-20-10");
    }

    #[test]
    fn window_ending_on_the_hour_excludes_the_next_hour() {
        let w = Window::ending_at(at("2026-11-20T11:00:00Z"), Duration::from_secs(600));
        let hours = w.file_hours(Duration::ZERO);
        assert_eq!(hour_stamp(*hours.end()), "2026-11-20-10");
        assert_eq!(hour_stamp(*hours.start()), "2026-11-20-10");
    }

    #[test]
    fn hour_keys_sort_with_the_files_of_that_hour() {
        let p = ObjectPath::from("cf");
        let k = hour_key(&p, "E1", parse_hour_stamp("2026-11-20-10").unwrap());
        assert_eq!(k, "cf/E1.2026-11-20-10");
        assert!("cf/E1.2026-11-20-10.abc.gz" > k.as_str());
        assert!("cf/E1.2026-11-20-11.abc.gz" > k.as_str());
    }
}
