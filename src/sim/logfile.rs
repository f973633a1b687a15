//! Simulated requests → CloudFront standard log files: the 33-field format with its
//! `#Version`/`#Fields` header, the user agent URL-encoded (some twice), several gzip files
//! per hour named `<DIST>.YYYY-MM-DD-HH.<id>.gz`, lines not in time order, and a share of an
//! hour's lines delivered late in a file of their own.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;

use super::{Request, Traffic};
use crate::source::cloudfront::CURRENT_FIELDS;

#[derive(Debug, Clone)]
pub struct LogFileOptions {
    pub distribution: String,
    /// CloudFront delivers an hour in several files.
    pub files_per_hour: usize,
    /// Share of lines delivered in a late file of their hour.
    pub late_share: f64,
    /// Share of user agents encoded twice (`%2520`).
    pub double_encoded_share: f64,
    pub seed: u64,
}

impl Default for LogFileOptions {
    fn default() -> Self {
        LogFileOptions { distribution: "E2REVOKDSAMPLE".into(), files_per_hour: 6, late_share: 0.01, double_encoded_share: 0.05, seed: 7 }
    }
}

pub fn header() -> String {
    format!("#Version: 1.0\n#Fields: {CURRENT_FIELDS}\n")
}

/// Appends one log line (with its newline).
pub fn render_line(out: &mut Vec<u8>, r: &Request, traffic: &Traffic, rng: &mut fastrand::Rng, double_encode: bool) {
    let s = &traffic.strings;
    let session = &traffic.sessions[r.session as usize];
    let secs = r.ts.floor() as i64;
    let t = DateTime::<Utc>::from_timestamp(secs, 0).expect("time in range");
    let path = s.get(r.path);
    let content_type = if path.ends_with(".m3u8") {
        "application/vnd.apple.mpegurl"
    } else if path.ends_with(".mpd") {
        "application/dash+xml"
    } else if path.ends_with(".ts") {
        "video/MP2T"
    } else if path.ends_with(".m4s") {
        "video/iso.segment"
    } else {
        "video/mp4"
    };
    let error = r.status == 0 || r.status >= 500;
    let result = if error {
        "Error"
    } else if path.ends_with(".m3u8") || path.ends_with(".mpd") {
        "Miss"
    } else if rng.u8(..10) < 9 {
        "Hit"
    } else {
        "Miss"
    };
    let request_id: String =
        (0..56).map(|_| b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"[rng.usize(..64)] as char).collect();
    let ua = match r.user_agent {
        None => "-".to_string(),
        Some(ua) => {
            let once = s.get(ua).replace('%', "%25").replace(' ', "%20").replace('"', "%22");
            if double_encode { once.replace('%', "%25") } else { once }
        }
    };
    let (range_start, range_end) = match r.range {
        Some((a, b)) => (a.to_string(), b.to_string()),
        None => ("-".into(), "-".into()),
    };
    let status = if r.status == 0 { "000".to_string() } else { r.status.to_string() };
    let ttfb = (f64::from(r.time_taken) * 0.3).max(0.001);
    let _ = writeln!(
        out,
        "{date}\t{time}\t{edge}\t{bytes}\t{ip}\tGET\td1rvkdsample.cloudfront.net\t/{token}{path}\t{status}\t{referer}\t{ua}\t-\t-\t{result}\t{request_id}==\tcdn.example-stream.com\thttps\t{cs_bytes}\t{taken:.3}\t-\tTLSv1.3\tTLS_AES_128_GCM_SHA256\t{result}\tHTTP/2.0\t-\t-\t{port}\t{ttfb:.3}\t{result}\t{content_type}\t{len}\t{range_start}\t{range_end}",
        date = t.format("%Y-%m-%d"),
        time = t.format("%H:%M:%S"),
        edge = s.get(r.edge),
        bytes = r.bytes,
        ip = s.get(r.ip),
        token = session.token,
        referer = r.referer.map_or("-", |x| s.get(x)),
        cs_bytes = 350 + rng.u32(..500),
        taken = r.time_taken,
        port = rng.u16(1024..65535),
        len = if error { "-".to_string() } else { r.bytes.saturating_sub(300).to_string() },
    );
}

/// The whole traffic as one plain (uncompressed) log, in time order.
pub fn render_all(traffic: &Traffic, options: &LogFileOptions) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let mut out = header().into_bytes();
    for r in &traffic.requests {
        let double = rng.f64() < options.double_encoded_share;
        render_line(&mut out, r, traffic, &mut rng, double);
    }
    out
}

/// Writes gzip log files under `dir/prefix/`, named as CloudFront names them. Returns their
/// paths.
pub fn write_files(traffic: &Traffic, dir: &Path, prefix: &str, options: &LogFileOptions) -> std::io::Result<Vec<PathBuf>> {
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let folder = if prefix.is_empty() { dir.to_path_buf() } else { dir.join(prefix) };
    std::fs::create_dir_all(&folder)?;
    // Group lines by (hour, delivery); the late file of an hour is delivery `files_per_hour`.
    let chunk = 3600 / options.files_per_hour.max(1) as i64;
    let mut groups: std::collections::BTreeMap<(i64, usize), Vec<&Request>> = Default::default();
    for r in &traffic.requests {
        let secs = r.ts.floor() as i64;
        let hour = secs.div_euclid(3600);
        let delivery = if rng.f64() < options.late_share { options.files_per_hour } else { (secs.rem_euclid(3600) / chunk) as usize };
        groups.entry((hour, delivery)).or_default().push(r);
    }
    let mut paths = Vec::new();
    for ((hour, _), mut lines) in groups {
        // CloudFront consolidates edges: lines are roughly, not strictly, in time order.
        for i in 0..lines.len() {
            let j = (i + rng.usize(0..64)).min(lines.len() - 1);
            lines.swap(i, j);
        }
        let stamp = DateTime::<Utc>::from_timestamp(hour * 3600, 0).expect("hour in range").format("%Y-%m-%d-%H");
        let name = format!("{}.{stamp}.{:08x}.gz", options.distribution, rng.u32(..));
        let path = folder.join(name);
        let mut text = header().into_bytes();
        for r in lines {
            let double = rng.f64() < options.double_encoded_share;
            render_line(&mut text, r, traffic, &mut rng, double);
        }
        let mut gz = GzEncoder::new(std::fs::File::create(&path)?, Compression::default());
        gz.write_all(&text)?;
        gz.finish()?;
        paths.push(path);
    }
    Ok(paths)
}
