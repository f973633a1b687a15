//! Viewers and players: how each kind of session turns into requests.

use super::{Behaviour, Request, Scenario, SessionTruth, Strings, Truth};
use crate::geo::{EDGES, Edge, distance_km};

/// Renditions of every ladder: name and video bitrate in kbit/s.
pub const LADDER: [(&str, f64); 5] = [("240p", 400.0), ("360p", 800.0), ("540p", 1800.0), ("720p", 3000.0), ("1080p", 5500.0)];

/// Live channels: segment duration (s) and packaging. 10 s is the HLS default; low-latency
/// channels use 2 s.
pub const CHANNELS: [(u32, Packaging); 12] = [
    (10, Packaging::HlsTs),
    (6, Packaging::HlsTs),
    (4, Packaging::HlsFmp4),
    (2, Packaging::HlsFmp4),
    (10, Packaging::HlsTs),
    (6, Packaging::Dash),
    (4, Packaging::Dash),
    (2, Packaging::Dash),
    (6, Packaging::HlsTs),
    (10, Packaging::HlsFmp4),
    (4, Packaging::HlsTs),
    (6, Packaging::HlsFmp4),
];

const VOD_TITLES: u32 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packaging {
    HlsTs,
    HlsFmp4,
    Dash,
    /// One MP4 file per rendition, fetched with Range requests (206).
    ByteRange,
}

#[derive(Clone, Copy)]
enum Content {
    Live { channel: u32 },
    Vod { title: u32 },
}

impl Content {
    fn segment_s(self) -> f64 {
        match self {
            Content::Live { channel } => f64::from(CHANNELS[channel as usize].0),
            Content::Vod { title } => [10.0, 6.0, 4.0][(title % 3) as usize],
        }
    }

    fn packaging(self) -> Packaging {
        match self {
            Content::Live { channel } => CHANNELS[channel as usize].1,
            Content::Vod { title } => match title % 10 {
                0..=2 => Packaging::ByteRange,
                3..=4 => Packaging::Dash,
                5..=6 => Packaging::HlsFmp4,
                _ => Packaging::HlsTs,
            },
        }
    }

    fn dir(self) -> String {
        match self {
            Content::Live { channel } => format!("/live/ch{}", channel + 1),
            Content::Vod { title } => format!("/vod/title{:03}", title + 1),
        }
    }

    fn vod_length_s(self) -> f64 {
        match self {
            Content::Vod { title } => 1200.0 + f64::from(title * 7919 % 7200),
            Content::Live { .. } => f64::INFINITY,
        }
    }
}

/// Where a viewer's requests come from at a given time.
#[derive(Clone)]
struct Network {
    ip: u32,
    edge: u32,
}

/// A playing device: who it says it is and how it is connected over time.
#[derive(Clone)]
struct Viewer {
    /// The UA of the player fetching media.
    player_ua: Option<u32>,
    /// The UA and referer of the page or sender that fetches the master playlist.
    page_ua: Option<u32>,
    page_referer: Option<u32>,
    media_referer: Option<u32>,
    /// Network changes: from this time on, this network.
    networks: Vec<(f64, Network)>,
    /// Highest rendition the device's bandwidth sustains.
    max_rendition: usize,
    /// Download bandwidth, bytes/s.
    bandwidth: f64,
    /// Fraction of media requests that fail first (then retried).
    error_rate: f64,
    /// How punctual the player is relative to segment availability (0 = machine-like).
    jitter: f64,
    /// Addresses each request leaves from at random (a proxy pool); empty = `networks`.
    pool: Vec<u32>,
    /// Whether the player notices network changes and re-fetches what was in flight.
    refetch_on_network_change: bool,
}

impl Viewer {
    fn network_at(&self, t: f64) -> &Network {
        let i = self.networks.partition_point(|(from, _)| *from <= t);
        &self.networks[i.saturating_sub(1)].1
    }
}

/// Playback options that shape a session's requests.
#[derive(Clone, Copy, Default)]
struct Quirks {
    preload_rate: f64,
    seek_rate: f64,
    surf: bool,
}

pub struct Simulation<'a> {
    sc: &'a Scenario,
    rng: fastrand::Rng,
    strings: Strings,
    sessions: Vec<SessionTruth>,
    requests: Vec<Request>,
    market_edges: Vec<usize>,
    world_edges: Vec<usize>,
    cgnat_pool: Vec<u32>,
}

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl<'a> Simulation<'a> {
    pub fn new(sc: &'a Scenario) -> Self {
        let market_edges: Vec<usize> = EDGES.iter().enumerate().filter(|(_, e)| e.country_code == sc.market).map(|(i, _)| i).collect();
        let world_edges: Vec<usize> = EDGES.iter().enumerate().filter(|(_, e)| e.country_code != sc.market).map(|(i, _)| i).collect();
        let mut sim = Simulation {
            sc,
            rng: fastrand::Rng::with_seed(sc.seed),
            strings: Strings::default(),
            sessions: Vec::new(),
            requests: Vec::new(),
            market_edges,
            world_edges,
            cgnat_pool: Vec::new(),
        };
        // Carrier-grade NAT: a few addresses of one mobile carrier shared by many subscribers.
        for _ in 0..24 {
            let ip = format!("100.{}.{}.{}", 64 + sim.rng.u8(0..64), sim.rng.u8(..), sim.rng.u8(1..255));
            let ip = sim.strings.intern(&ip);
            sim.cgnat_pool.push(ip);
        }
        sim
    }

    pub fn finish(self) -> (Vec<SessionTruth>, Vec<Request>, Strings) {
        (self.sessions, self.requests, self.strings)
    }

    pub fn run(&mut self) {
        let (start, end) = (self.sc.start as f64, self.sc.end() as f64);
        for _ in 0..self.sc.honest_sessions {
            let behaviour = self.pick_behaviour();
            self.honest_session(behaviour, start, end);
        }
        for _ in 0..self.sc.leaks {
            self.leaked_session(start, end);
        }
        for _ in 0..self.sc.restreamers {
            self.restreamer(start, end);
        }
    }

    // ------------------------------------------------------------------ random helpers

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.rng.f64()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.f64() < p
    }

    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.rng.f64().max(1e-12), self.rng.f64());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.usize(..items.len())]
    }

    fn pick_behaviour(&mut self) -> Behaviour {
        let total: u32 = Behaviour::MIX.iter().map(|(_, w)| w).sum();
        let mut x = self.rng.u32(..total);
        for (b, w) in Behaviour::MIX {
            if x < w {
                return b;
            }
            x -= w;
        }
        Behaviour::Plain
    }

    fn token(&mut self) -> (String, String) {
        let mut id: String = (0..20).map(|_| B64[self.rng.usize(..62)] as char).collect();
        if self.chance(0.2) {
            id.insert(self.rng.usize(1..19), if self.chance(0.5) { '_' } else { '-' });
        }
        let payload: String = (0..self.rng.usize(110..170)).map(|_| B64[self.rng.usize(..64)] as char).collect();
        let sig: String = (0..43).map(|_| B64[self.rng.usize(..64)] as char).collect();
        let token = format!("{id}.eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{payload}.{sig}");
        (id, token)
    }

    // ------------------------------------------------------------------ places and devices

    fn edge_name(&mut self, edge: &Edge) -> u32 {
        let pop = format!("{}{}-{}", edge.code, 1 + self.rng.u8(0..80), self.pick(&["C1", "C2", "P1", "P2", "P3", "P4"]));
        self.strings.intern(&pop)
    }

    fn home_edge(&mut self, in_market: bool) -> usize {
        if in_market || self.world_edges.is_empty() {
            let i = self.rng.usize(..self.market_edges.len());
            self.market_edges[i]
        } else {
            let i = self.rng.usize(..self.world_edges.len());
            self.world_edges[i]
        }
    }

    /// An edge within `km` of another (or the same one).
    fn nearby_edge(&mut self, edge: usize, km: f64) -> usize {
        let e = &EDGES[edge];
        let near: Vec<usize> = EDGES
            .iter()
            .enumerate()
            .filter(|(_, o)| distance_km((e.latitude, e.longitude), (o.latitude, o.longitude)) <= km)
            .map(|(i, _)| i)
            .collect();
        self.pick(&near)
    }

    fn country_index(&self, edge: usize) -> u32 {
        let cc = EDGES[edge].country_code.as_bytes();
        u32::from(cc[0]) * 31 + u32::from(cc[1])
    }

    /// A residential address of an ISP in the country of `edge`.
    fn home_ip(&mut self, edge: usize) -> u32 {
        let c = self.country_index(edge);
        let isp = self.rng.u32(0..6);
        let a = 24 + (c * 7 + isp * 13) % 190;
        let ip = if a == 100 || a == 127 { 101 } else { a };
        let text = format!("{ip}.{}.{}.{}", (c * 3 + isp * 41) % 256, self.rng.u8(..), self.rng.u8(1..255));
        self.strings.intern(&text)
    }

    fn home_ipv6(&mut self, edge: usize) -> u32 {
        let c = self.country_index(edge);
        let text = format!(
            "2a0{}:{:x}:{:x}:{:x}::{:x}",
            c % 10,
            0x1000 + (c * 97) % 0xe000,
            self.rng.u16(..),
            self.rng.u16(..),
            self.rng.u16(1..)
        );
        self.strings.intern(&text)
    }

    fn datacenter_ip(&mut self) -> u32 {
        let a = self.pick(&[5u8, 23, 45, 51, 91, 138, 146, 185, 194]);
        let text = format!("{a}.{}.{}.{}", self.rng.u8(..), self.rng.u8(..), self.rng.u8(1..255));
        self.strings.intern(&text)
    }

    fn opt(&mut self, s: Option<String>) -> Option<u32> {
        s.map(|s| self.strings.intern(&s))
    }

    fn browser_ua(&mut self) -> String {
        let chrome = self.rng.u32(118..132);
        match self.rng.u32(0..6) {
            0 | 1 => format!(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome}.0.0.0 Safari/537.36"
            ),
            2 => format!(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome}.0.0.0 Safari/537.36"
            ),
            3 => format!("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{}.0) Gecko/20100101 Firefox/{}.0", chrome - 5, chrome - 5),
            4 => format!(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome}.0.0.0 Safari/537.36 Edg/{chrome}.0.0.0"
            ),
            _ => format!("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome}.0.0.0 Safari/537.36"),
        }
    }

    fn app_ua(&mut self) -> String {
        match self.rng.u32(0..5) {
            0 => format!(
                "StreamApp/5.{} (Linux; Android {}; Pixel {}) ExoPlayerLib/2.19.1",
                self.rng.u32(0..9),
                self.rng.u32(11..15),
                self.rng.u32(5..9)
            ),
            1 => format!("Dalvik/2.1.0 (Linux; U; Android {}; SM-S91{}B Build/UP1A.231005.007)", self.rng.u32(12..15), self.rng.u32(1..9)),
            2 => format!(
                "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{}.0.0.0 Safari/537.36 WebAppManager",
                self.rng.u32(79..95)
            ),
            3 => format!(
                "Mozilla/5.0 (SMART-TV; LINUX; Tizen {}.0) AppleWebKit/537.36 (KHTML, like Gecko) {}.0/{}.0 TV Safari/537.36",
                self.rng.u32(5..8),
                self.rng.u32(3..6),
                self.rng.u32(76..95)
            ),
            _ => format!("Roku/DVP-{}.0 ({}.0.0.{})", self.rng.u32(11..14), self.rng.u32(11..14), self.rng.u32(4000..4300)),
        }
    }

    fn ios_uas(&mut self) -> (String, String) {
        let major = self.rng.u32(15..19);
        let minor = self.rng.u32(0..7);
        let device = self.pick(&["iPhone", "iPad"]);
        let build = format!("{}{}{}", 19 + major - 15, self.pick(&["A", "B", "C", "D", "E", "F", "G"]), self.rng.u32(5..400));
        (
            format!(
                "Mozilla/5.0 ({device}; CPU {device} OS {major}_{minor} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{major}.{minor} Mobile/15E148 Safari/604.1"
            ),
            format!("AppleCoreMedia/1.0.0.{build} ({device}; U; CPU OS {major}_{minor} like Mac OS X; en_us)"),
        )
    }

    fn tool_ua(&mut self) -> String {
        match self.rng.u32(0..8) {
            0 | 1 => format!("Lavf/{}.{}.100", self.rng.u32(58..62), self.rng.u32(0..30)),
            2 => format!("VLC/3.0.{} LibVLC/3.0.{}", self.rng.u32(16..21), self.rng.u32(16..21)),
            3 => format!("curl/8.{}.0", self.rng.u32(0..11)),
            4 => format!(
                "Kodi/{}.{} (Linux; Android 12.0; SHIELD Android TV Build/SR1A.211012.001) Android/12.0.0 Sys_CPU/aarch64 App_Bitness/64 Version/{}.{}-(20.2.0)-Git:20230629-5f418d0b13",
                self.rng.u32(19..22),
                self.rng.u32(0..4),
                self.rng.u32(19..22),
                self.rng.u32(0..4)
            ),
            5 => format!("python-requests/2.{}.0", self.rng.u32(25..33)),
            6 => format!("streamlink/6.{}.0", self.rng.u32(0..9)),
            _ => "ffmpeg/6.1".to_string(),
        }
    }

    fn site_referer(&mut self, content: Content) -> String {
        format!(
            "https://watch.example-stream.com{}",
            match content {
                Content::Live { channel } => format!("/live/{}", channel + 1),
                Content::Vod { title } => format!("/title/{}", title + 1),
            }
        )
    }

    fn pirate_referer(&mut self) -> Option<String> {
        match self.rng.u32(0..5) {
            0 => None,
            1 => Some(format!("https://t.me/s/freesports{}", self.rng.u32(1..99))),
            _ => Some(format!(
                "https://{}-streams{}.example/watch/{}",
                self.pick(&["live", "free", "hd", "total"]),
                self.rng.u32(1..40),
                self.rng.u32(100..999)
            )),
        }
    }

    fn device(&mut self, content: Content, edge: usize) -> Viewer {
        let ip = self.home_ip(edge);
        let pop = self.edge_name(&EDGES[edge]);
        let (player_ua, page_ua, page_referer, media_referer) = match self.rng.u32(0..3) {
            0 => {
                let ua = self.browser_ua();
                let referer = self.site_referer(content);
                (Some(ua.clone()), Some(ua), Some(referer.clone()), Some(referer))
            }
            _ => {
                let ua = self.app_ua();
                (Some(ua.clone()), Some(ua), None, None)
            }
        };
        let max_rendition = self.rng.usize(2..LADDER.len());
        Viewer {
            player_ua: self.opt(player_ua),
            page_ua: self.opt(page_ua),
            page_referer: self.opt(page_referer),
            media_referer: self.opt(media_referer),
            networks: vec![(f64::NEG_INFINITY, Network { ip, edge: pop })],
            max_rendition,
            bandwidth: self.lognormal(4.0e6, 0.6),
            error_rate: 0.002,
            jitter: self.uniform(0.15, 0.5),
            pool: Vec::new(),
            refetch_on_network_change: false,
        }
    }

    fn content(&mut self, live: bool) -> Content {
        if live {
            Content::Live { channel: self.rng.u32(0..CHANNELS.len() as u32) }
        } else {
            Content::Vod { title: self.rng.u32(0..VOD_TITLES) }
        }
    }

    /// A session's play time, clipped to the scenario; `None` if it does not overlap it.
    fn play_span(&mut self, start: f64, end: f64, median_s: f64, sigma: f64) -> Option<(f64, f64)> {
        let length = self.lognormal(median_s, sigma).clamp(60.0, 8.0 * 3600.0);
        let begin = self.uniform(start - length.min(3600.0), end);
        let finish = (begin + length).min(end);
        (finish > start).then_some((begin, finish))
    }

    // ------------------------------------------------------------------ sessions

    fn honest_session(&mut self, behaviour: Behaviour, start: f64, end: f64) {
        let live = behaviour == Behaviour::ChannelSurf || self.chance(0.6);
        let mut content = self.content(live);
        if behaviour == Behaviour::CatchUpSeek && !live && content.packaging() == Packaging::ByteRange {
            content = Content::Vod { title: 3 };
        }
        let (begin, finish) = loop {
            let span = match behaviour {
                Behaviour::LongSession => {
                    let length = self.uniform(2.0 * 3600.0, 8.0 * 3600.0);
                    let begin = self.uniform(start - length + 600.0, start + 600.0);
                    Some((begin, (begin + length).min(end)))
                }
                _ => self.play_span(start, end, 25.0 * 60.0, 0.9),
            };
            if let Some(span) = span {
                break span;
            }
        };
        let in_market = self.chance(0.93);
        let home = self.home_edge(in_market);
        let mut viewer = self.device(content, home);
        let mut quirks = Quirks::default();
        let (id, token) = self.token();
        let session = self.sessions.len() as u32;
        match behaviour {
            Behaviour::Plain | Behaviour::LongSession => {}
            Behaviour::IosNative => {
                let (page, media) = self.ios_uas();
                let referer = self.site_referer(content);
                viewer.page_ua = self.opt(Some(page));
                viewer.page_referer = self.opt(Some(referer));
                viewer.player_ua = self.opt(Some(media));
                viewer.media_referer = None;
            }
            Behaviour::NetworkHandover => {
                viewer.refetch_on_network_change = true;
                let switches = self.rng.usize(1..3);
                let mut on_cellular = false;
                let home_net = viewer.networks[0].1.clone();
                for k in 0..switches {
                    let at = self.uniform(begin, finish) + k as f64 * 60.0;
                    let net = if on_cellular {
                        home_net.clone()
                    } else {
                        let ip = if self.chance(0.5) { self.pick(&self.cgnat_pool.clone()) } else { self.home_ip(home) };
                        let edge = if self.chance(0.5) { self.nearby_edge(home, 800.0) } else { home };
                        let pop = self.edge_name(&EDGES[edge]);
                        Network { ip, edge: pop }
                    };
                    on_cellular = !on_cellular;
                    viewer.networks.push((at, net));
                }
            }
            Behaviour::DhcpRenewal => {
                viewer.refetch_on_network_change = true;
                for _ in 0..self.rng.usize(1..3) {
                    let at = self.uniform(begin, finish);
                    let ip = self.home_ip(home);
                    let edge = viewer.networks[0].1.edge;
                    viewer.networks.push((at, Network { ip, edge }));
                }
            }
            Behaviour::VpnToggle => {
                viewer.refetch_on_network_change = true;
                let on = self.uniform(begin, finish);
                let off = on + self.uniform(120.0, 1800.0);
                let exit = self.home_edge(false);
                let ip = self.datacenter_ip();
                let pop = self.edge_name(&EDGES[exit]);
                let home_net = viewer.networks[0].1.clone();
                viewer.networks.push((on, Network { ip, edge: pop }));
                viewer.networks.push((off, home_net));
            }
            Behaviour::DualStack => {
                let v4 = viewer.networks[0].1.clone();
                let v6 = Network { ip: self.home_ipv6(home), edge: v4.edge };
                // Each new connection races both families; HTTP/2 keeps one for a while.
                let mut t = begin;
                while t < finish {
                    t += self.uniform(20.0, 240.0);
                    let net = if self.chance(0.5) { v4.clone() } else { v6.clone() };
                    viewer.networks.push((t, net));
                }
            }
            Behaviour::CatchUpSeek => quirks.seek_rate = self.uniform(1.0 / 300.0, 1.0 / 60.0),
            Behaviour::AbrPreload => quirks.preload_rate = self.uniform(0.05, 0.2),
            Behaviour::ChannelSurf => quirks.surf = true,
            Behaviour::Cgnat => {
                let ip = self.pick(&self.cgnat_pool.clone());
                viewer.networks[0].1.ip = ip;
            }
            Behaviour::Casting => {
                // The phone's page fetches the master playlist (and previews a few segments),
                // then the receiver on the same network plays.
                let (page, _) = self.ios_uas();
                let referer = self.site_referer(content);
                viewer.page_ua = self.opt(Some(page.clone()));
                viewer.page_referer = self.opt(Some(referer));
                let receiver = format!(
                    "Mozilla/5.0 (X11; Linux armv7l) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.0.0 Safari/537.36 CrKey/1.56.{} DeviceType/Chromecast",
                    self.rng.u32(500000..500200)
                );
                let mut preview = Viewer { player_ua: self.opt(Some(page)), ..viewer.clone() };
                // The phone often reaches the CDN over IPv6 while the TV stick uses IPv4.
                if self.chance(0.4) {
                    let v6 = self.home_ipv6(home);
                    preview.networks[0].1.ip = v6;
                }
                let preview_end = begin + self.uniform(5.0, 25.0);
                let _ = self.play(session, &preview, content, begin, preview_end, quirks);
                viewer.player_ua = self.opt(Some(receiver));
                viewer.media_referer = None;
            }
            Behaviour::Retries => viewer.error_rate = self.uniform(0.03, 0.1),
            Behaviour::ProxyPool => {
                let size = self.rng.usize(2..5);
                viewer.pool = (0..size).map(|_| self.home_ip(home)).collect();
            }
        }
        let _ = self.play(session, &viewer, content, begin, finish, quirks);
        self.sessions.push(SessionTruth { session_id: id, token, truth: Truth::Honest(behaviour), live });
    }

    fn leaked_session(&mut self, start: f64, end: f64) {
        let live = self.chance(0.65);
        let content = self.content(live);
        let (id, token) = self.token();
        let session = self.sessions.len() as u32;
        let leak_at = self.uniform(start, end - 900.0);
        // 2–50 concurrent viewers: most leaks are small, a few are posted widely.
        let viewers = match self.rng.u32(0..100) {
            0..=59 => self.rng.usize(2..5),
            60..=84 => self.rng.usize(5..13),
            _ => self.rng.usize(13..51),
        };
        let join_span = self.uniform(60.0, 15.0 * 60.0);
        let mut spans = Vec::new();
        // The token's owner, still watching in most cases.
        if self.chance(0.7) {
            let home = self.home_edge(true);
            let owner = self.device(content, home);
            let begin = leak_at - self.uniform(60.0, 1800.0);
            let finish = (leak_at + self.lognormal(40.0 * 60.0, 0.5)).min(end);
            if let Some(watching) = self.play(session, &owner, content, begin, finish, Quirks::default()) {
                spans.push((watching, finish));
            }
        }
        let mut joins: Vec<f64> = (0..viewers.saturating_sub(spans.len()).max(1))
            .map(|k| if k == 0 { leak_at } else { leak_at + self.uniform(0.0, join_span) })
            .collect();
        joins.sort_by(f64::total_cmp);
        for join in joins {
            let in_market = self.chance(0.4);
            let home = self.home_edge(in_market);
            let mut viewer = self.device(content, home);
            match self.rng.u32(0..10) {
                0..=1 => {
                    viewer.player_ua = {
                        let ua = self.tool_ua();
                        self.opt(Some(ua))
                    }
                }
                2..=3 => {
                    let (page, media) = self.ios_uas();
                    viewer.page_ua = self.opt(Some(page));
                    viewer.player_ua = self.opt(Some(media));
                }
                _ => {
                    let ua = self.browser_ua();
                    viewer.player_ua = self.opt(Some(ua.clone()));
                    viewer.page_ua = self.opt(Some(ua));
                }
            }
            let referer = self.pirate_referer();
            viewer.page_referer = self.opt(referer.clone());
            viewer.media_referer = self.opt(referer);
            let finish = (join + self.lognormal(15.0 * 60.0, 0.6).max(120.0)).min(end);
            // A viewer counts from its first segment: before that nothing shows it is watching.
            if let Some(watching) = self.play(session, &viewer, content, join, finish, Quirks::default()) {
                spans.push((watching, finish));
            }
        }
        let (peak_viewers, reaches_3_at, shared) = concurrency(&spans);
        let (shared_from, shared_until) = shared.unwrap_or((leak_at, leak_at));
        self.sessions.push(SessionTruth {
            session_id: id,
            token,
            truth: Truth::Leak { peak_viewers, reaches_3_at, shared_from, shared_until },
            live,
        });
    }

    fn restreamer(&mut self, start: f64, end: f64) {
        let content = self.content(true);
        let (id, token) = self.token();
        let session = self.sessions.len() as u32;
        let exit = self.pick(&["FRA", "AMS", "IAD", "SIN", "LHR", "WAW", "ORD"]);
        let edge = EDGES.iter().position(|e| e.code == exit).unwrap_or(0);
        let ip = self.datacenter_ip();
        let pop = self.edge_name(&EDGES[edge]);
        let ua = if self.chance(0.8) { self.tool_ua() } else { self.browser_ua() };
        let ua = self.opt(Some(ua));
        let renditions = self.rng.usize(2..5);
        let Content::Live { channel } = content else { unreachable!() };
        let d = content.segment_s();
        let dir = content.dir();
        let packaging = content.packaging();
        let net = Network { ip, edge: pop };
        // Around the clock: already pulling before the period, still pulling after it.
        let mut n = (start / d).floor() as i64 - 1;
        let mut t = n as f64 * d;
        while t < end {
            let available = (n + 1) as f64 * d;
            let lowest = LADDER.len() - renditions;
            for (r, rung) in LADDER.iter().enumerate().skip(lowest) {
                let at = available + 0.3 + self.uniform(0.0, 0.2);
                if matches!(packaging, Packaging::HlsTs | Packaging::HlsFmp4) {
                    let bytes = self.rng.u64(450..700);
                    self.emit(session, &net, ua, None, format!("{dir}/{}/index.m3u8", rung.0), at, 200, bytes, None, 2e7);
                } else if n % 5 == 0 && r == lowest {
                    let bytes = self.rng.u64(2500..4000);
                    self.emit(session, &net, ua, None, format!("{dir}/manifest.mpd"), at, 200, bytes, None, 2e7);
                }
                let bytes = segment_bytes(r, d, &mut self.rng);
                self.emit(session, &net, ua, None, segment_path(&dir, packaging, r, n), at + 0.1, 200, bytes, None, 2e7);
            }
            n += 1;
            t = n as f64 * d;
        }
        let _ = channel;
        self.sessions.push(SessionTruth { session_id: id, token, truth: Truth::Restreamer, live: true });
    }

    // ------------------------------------------------------------------ playback

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        session: u32,
        net: &Network,
        ua: Option<u32>,
        referer: Option<u32>,
        path: String,
        requested: f64,
        status: u16,
        bytes: u64,
        range: Option<(u64, u64)>,
        bandwidth: f64,
    ) -> f64 {
        let time_taken = (bytes as f64 / bandwidth + 0.01 + self.uniform(0.0, 0.05)) as f32;
        let ts = requested + f64::from(time_taken);
        let (start, end) = (self.sc.start as f64, self.sc.end() as f64);
        if ts >= start && ts < end {
            let path = self.strings.intern(&path);
            self.requests.push(Request {
                ts,
                session,
                ip: net.ip,
                user_agent: ua,
                referer,
                edge: net.edge,
                path,
                status,
                bytes,
                range,
                time_taken,
            });
        }
        ts
    }

    /// One request of media, with the viewer's network at that time and its error rate.
    fn media(&mut self, session: u32, v: &Viewer, path: String, at: f64, bytes: u64, range: Option<(u64, u64)>) -> f64 {
        let mut net = v.network_at(at).clone();
        if !v.pool.is_empty() {
            net.ip = self.pick(&v.pool);
        }
        let status = if range.is_some() { 206 } else { 200 };
        if self.chance(v.error_rate) {
            let code = self.pick(&[502u16, 504, 0, 503]);
            let error_bytes = self.rng.u64(300..900);
            let failed = self.emit(session, &net, v.player_ua, v.media_referer, path.clone(), at, code, error_bytes, None, v.bandwidth);
            let retry_at = failed + self.uniform(0.3, 2.0);
            let net = v.network_at(retry_at).clone();
            return self.emit(session, &net, v.player_ua, v.media_referer, path, retry_at, status, bytes, range, v.bandwidth);
        }
        // A request in flight when the network changes completes on the old one.
        self.emit(session, &net, v.player_ua, v.media_referer, path, at, status, bytes, range, v.bandwidth)
    }

    /// Plays from `begin` to `finish`; returns when the first media segment was delivered
    /// (a viewer is watching from then on), if it was.
    fn play(&mut self, session: u32, v: &Viewer, content: Content, begin: f64, finish: f64, quirks: Quirks) -> Option<f64> {
        let mut content = content;
        let mut t = begin;
        let mut first_media = None;
        while t < finish {
            // Channel surfing: short stays on several channels, then a longer one.
            let stay_until = if quirks.surf && self.chance(0.85) { (t + self.uniform(15.0, 240.0)).min(finish) } else { finish };
            let first = self.play_one(session, v, content, t, stay_until, quirks);
            first_media = first_media.or(first);
            t = stay_until + 0.5;
            if quirks.surf {
                content = self.content(true);
            }
        }
        first_media
    }

    fn play_one(&mut self, session: u32, v: &Viewer, content: Content, begin: f64, finish: f64, quirks: Quirks) -> Option<f64> {
        let mut first_media = None;
        let d = content.segment_s();
        let dir = content.dir();
        let packaging = content.packaging();
        let net = v.network_at(begin).clone();
        let master = match packaging {
            Packaging::Dash => format!("{dir}/manifest.mpd"),
            Packaging::ByteRange => format!("{dir}/master.m3u8"),
            _ => format!("{dir}/master.m3u8"),
        };
        let master_bytes = if packaging == Packaging::Dash { self.rng.u64(2500..4000) } else { self.rng.u64(600..1000) };
        let mut t = self.emit(session, &net, v.page_ua, v.page_referer, master, begin, 200, master_bytes, None, v.bandwidth);
        let mut r = self.rng.usize(1..=v.max_rendition).min(LADDER.len() - 1);
        let live = matches!(content, Content::Live { .. });
        // The playhead, in segment numbers: live players start three segments behind the edge.
        let mut n: i64 = if live { (t / d).floor() as i64 - 3 } else { 0 };
        let vod_segments = (content.vod_length_s() / d).ceil() as i64;
        let mut burst: usize = 3; // segments fetched back to back on start and after seeks
        let mut init_needed = matches!(packaging, Packaging::HlsFmp4 | Packaging::Dash);
        let mut last_manifest = t;
        let mut preload_left = 0;
        let mut last_ip = net.ip;
        while t < finish {
            if !live && n >= vod_segments {
                break;
            }
            // Live segments appear at the edge every d seconds; a player that caught up waits.
            if live && burst == 0 {
                let available = (n + 4) as f64 * d;
                t = t.max(available + d * v.jitter * self.rng.f64());
            } else if burst == 0 {
                t += d * (1.0 + v.jitter * (self.rng.f64() - 0.5));
            }
            if t >= finish {
                break;
            }
            // Playlist refresh: HLS media playlists each segment while live, DASH manifests
            // every 30 s (live) — VOD playlists once.
            match packaging {
                Packaging::HlsTs | Packaging::HlsFmp4 if live || n == 0 => {
                    let p = format!("{dir}/{}/index.m3u8", LADDER[r].0);
                    let b = self.rng.u64(400..800);
                    t = self.media(session, v, p, t, b, None);
                }
                Packaging::Dash if live && t - last_manifest > 30.0 => {
                    let p = format!("{dir}/manifest.mpd");
                    let b = self.rng.u64(2500..4000);
                    t = self.media(session, v, p, t, b, None);
                    last_manifest = t;
                }
                _ => {}
            }
            if init_needed {
                let p = format!("{dir}/{}/init.mp4", LADDER[r].0);
                let bytes = self.rng.u64(700..1400);
                t = self.media(session, v, p, t, bytes, None);
                init_needed = false;
            }
            let bytes = segment_bytes(r, d, &mut self.rng);
            // In one MP4 per rendition, segment n starts after n segments of that rendition:
            // its offset is n times the mean segment size (audio included).
            let range = (packaging == Packaging::ByteRange).then(|| {
                let per = mean_segment_bytes(r, d) as u64;
                (n as u64 * per, n as u64 * per + bytes - 1)
            });
            // A player that notices a new network re-requests what was in flight on the old one.
            let ip_now = v.network_at(t).ip;
            if v.refetch_on_network_change && ip_now != last_ip && n > 0 && self.chance(0.6) {
                for back in (1..=self.rng.i64(1..3)).rev() {
                    let path = segment_path(&dir, packaging, r, n - back);
                    let b = segment_bytes(r, d, &mut self.rng);
                    let range = range.map(|(a, z)| (a.saturating_sub(back as u64 * b), z.saturating_sub(back as u64 * b)));
                    t = self.media(session, v, path, t, b, range);
                }
            }
            last_ip = ip_now;
            let path = segment_path(&dir, packaging, r, n);
            t = self.media(session, v, path, t, bytes, range);
            first_media = first_media.or(Some(t));
            // ABR preloading: the next rendition's copy of the same segment.
            if preload_left > 0 && r + 1 < LADDER.len() {
                let path = segment_path(&dir, packaging, r + 1, n);
                let bytes = segment_bytes(r + 1, d, &mut self.rng);
                let range = range.map(|(a, _)| (a, a + bytes - 1));
                t = self.media(session, v, path, t, bytes, range);
                preload_left -= 1;
            } else if self.chance(quirks.preload_rate) {
                preload_left = self.rng.u32(2..7);
            }
            // Bandwidth-driven switches; an emergency down-switch abandons the segment and
            // fetches it again in the lower rendition.
            if self.chance(0.03) {
                let up = self.chance(0.5);
                let next = if up { (r + 1).min(v.max_rendition) } else { r.saturating_sub(1) };
                if next != r {
                    r = next;
                    init_needed = matches!(packaging, Packaging::HlsFmp4 | Packaging::Dash);
                    if !up && packaging != Packaging::ByteRange && self.chance(0.3) {
                        let path = segment_path(&dir, packaging, r, n);
                        let b = segment_bytes(r, d, &mut self.rng);
                        t = self.media(session, v, path, t, b, None);
                    }
                }
            }
            n += 1;
            burst = burst.saturating_sub(1);
            // Seeking: back (re-fetching what was seen) or forward, then a burst to refill.
            if self.chance(quirks.seek_rate * d) {
                let jump = self.rng.i64(5..90);
                n = if self.chance(0.5) { (n - jump).max(0) } else { n + jump };
                if live {
                    // Catch-up can go back, never past the live edge.
                    n = n.min((t / d).floor() as i64 - 3);
                }
                burst = self.rng.usize(3..7);
            }
        }
        first_media
    }
}

/// Video of the rendition plus 96 kbit/s audio, for `d` seconds.
fn mean_segment_bytes(r: usize, d: f64) -> f64 {
    (LADDER[r].1 + 96.0) * 1000.0 / 8.0 * d
}

fn segment_bytes(r: usize, d: f64, rng: &mut fastrand::Rng) -> u64 {
    (mean_segment_bytes(r, d) * (0.8 + 0.4 * rng.f64())) as u64
}

fn segment_path(dir: &str, packaging: Packaging, r: usize, n: i64) -> String {
    let rendition = LADDER[r].0;
    match packaging {
        Packaging::HlsTs => format!("{dir}/{rendition}/seg_{n:06}.ts"),
        Packaging::HlsFmp4 => format!("{dir}/{rendition}/seg_{n:06}.m4s"),
        Packaging::Dash => format!("{dir}/{rendition}/chunk_{n}.m4s"),
        Packaging::ByteRange => format!("{dir}/{rendition}/media.mp4"),
    }
}

/// Peak concurrency, when it first reached 3, and from when to when two or more played.
fn concurrency(spans: &[(f64, f64)]) -> (usize, Option<f64>, Option<(f64, f64)>) {
    let mut events: Vec<(f64, i32)> = spans.iter().flat_map(|&(a, b)| [(a, 1), (b, -1)]).collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut peak, mut at3, mut from2, mut until2) = (0i32, 0i32, None, None, None);
    for (t, delta) in events {
        let before = now;
        now += delta;
        peak = peak.max(now);
        if now >= 2 && from2.is_none() {
            from2 = Some(t);
        }
        if before >= 2 && now < 2 {
            until2 = Some(t);
        }
        if now >= 3 && at3.is_none() {
            at3 = Some(t);
        }
    }
    (peak as usize, at3, from2.zip(until2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_sweep_finds_peak_and_third_viewer() {
        let (peak, at3, shared) = concurrency(&[(0.0, 100.0), (10.0, 50.0), (40.0, 60.0), (55.0, 70.0)]);
        assert_eq!(peak, 3);
        assert_eq!(at3, Some(40.0));
        assert_eq!(shared, Some((10.0, 70.0)));
    }
}
