//! Traffic simulator: realistic CloudFront traffic of a streaming service with known leaked
//! sessions, for tests, the sample logs and the benchmarks.
//!
//! It models HLS and DASH delivery (bitrate ladders, segment durations from 2 s to 10 s, live
//! and VOD, playlist refreshes, 206 byte-range requests) and an honest population whose normal
//! playback often looks "multiple" in one session (iOS native players, network handovers, VPN
//! toggles, dual-stack, seeking, ABR preloading, channel surfing, CGNAT, casting, retries),
//! next to leaked tokens (2–50 viewers joining over minutes, often far apart) and restreamers
//! (several renditions in parallel, steady, around the clock). Every session carries its
//! ground truth. Output is deterministic for a seed.

pub mod logfile;
mod player;
pub mod replay;

use std::collections::HashMap;

pub use player::{CHANNELS, LADDER};

/// What the simulated traffic should contain.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    /// Epoch seconds of the first request written.
    pub start: i64,
    pub duration_s: i64,
    /// Honest sessions playing at some point during the period.
    pub honest_sessions: usize,
    pub leaks: usize,
    pub restreamers: usize,
    /// The country most honest viewers are in.
    pub market: &'static str,
}

impl Scenario {
    pub fn end(&self) -> i64 {
        self.start + self.duration_s
    }
}

/// Honest playback patterns, each one a way an honest session can look "multiple".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Behaviour {
    /// One device, one network: browser (hls.js/dash.js), app or TV.
    Plain,
    /// Safari's page fetches the master playlist, AppleCoreMedia the media: two UAs, two referers.
    IosNative,
    /// Wi-Fi ↔ cellular: the address (and maybe the edge) changes once or twice, in-flight
    /// requests of the old network finishing after the new one started.
    NetworkHandover,
    /// DHCP lease renewals: a new address in the same ISP.
    DhcpRenewal,
    /// A VPN switched on and off: an address (and edge) in another country for a while.
    VpnToggle,
    /// Happy Eyeballs: connections alternate between IPv4 and IPv6 addresses of one device.
    DualStack,
    /// Catch-up and seeking: bursts of fast fetches, earlier segments fetched again.
    CatchUpSeek,
    /// ABR switches with a second rendition preloaded: two renditions fetched in parallel.
    AbrPreload,
    /// One viewer zapping across many channels on one token.
    ChannelSurf,
    /// Hours-long playback.
    LongSession,
    /// Behind carrier-grade NAT: the address is shared with many other sessions.
    Cgnat,
    /// A phone casting to a TV stick: sender and receiver UAs on one home address.
    Casting,
    /// Errors and retries: 5xx/000 responses, the same segment fetched again.
    Retries,
    /// Egress through a pool of addresses (enterprise proxies, carrier NAT with arbitrary
    /// pooling, iCloud Private Relay): consecutive requests of one player from 2–4 addresses.
    ProxyPool,
}

impl Behaviour {
    /// Share of honest sessions showing each behaviour.
    pub const MIX: [(Behaviour, u32); 14] = [
        (Behaviour::Plain, 380),
        (Behaviour::IosNative, 150),
        (Behaviour::NetworkHandover, 90),
        (Behaviour::DhcpRenewal, 30),
        (Behaviour::VpnToggle, 25),
        (Behaviour::DualStack, 40),
        (Behaviour::CatchUpSeek, 80),
        (Behaviour::AbrPreload, 50),
        (Behaviour::ChannelSurf, 50),
        (Behaviour::LongSession, 35),
        (Behaviour::Cgnat, 30),
        (Behaviour::Casting, 20),
        (Behaviour::Retries, 20),
        (Behaviour::ProxyPool, 30),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Plain => "plain",
            Behaviour::IosNative => "ios_native_hls",
            Behaviour::NetworkHandover => "wifi_cellular_handover",
            Behaviour::DhcpRenewal => "dhcp_renewal",
            Behaviour::VpnToggle => "vpn_toggle",
            Behaviour::DualStack => "dual_stack",
            Behaviour::CatchUpSeek => "catch_up_seek",
            Behaviour::AbrPreload => "abr_preload",
            Behaviour::ChannelSurf => "channel_surf",
            Behaviour::LongSession => "long_session",
            Behaviour::Cgnat => "cgnat",
            Behaviour::Casting => "casting",
            Behaviour::Retries => "retries",
            Behaviour::ProxyPool => "proxy_pool",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Truth {
    Honest(Behaviour),
    /// A token shared by several viewers.
    Leak {
        /// Most viewers playing at the same time.
        peak_viewers: usize,
        /// When a third viewer was playing at the same time as two others.
        reaches_3_at: Option<f64>,
        /// When a second viewer started playing alongside the first.
        shared_from: f64,
        /// When the last time two or more viewers were playing ended.
        shared_until: f64,
    },
    Restreamer,
}

impl Truth {
    pub fn is_abuse(&self) -> bool {
        !matches!(self, Truth::Honest(_))
    }
}

#[derive(Debug, Clone)]
pub struct SessionTruth {
    pub session_id: String,
    /// `<session_id>.<jwt header>.<jwt payload>.<jwt signature>`
    pub token: String,
    pub truth: Truth,
    pub live: bool,
}

/// One request as CloudFront would log it.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    /// When the response finished, epoch seconds.
    pub ts: f64,
    pub session: u32,
    pub ip: u32,
    pub user_agent: Option<u32>,
    pub referer: Option<u32>,
    /// Full edge location, e.g. `FRA56-P1`.
    pub edge: u32,
    /// The path after the token segment.
    pub path: u32,
    pub status: u16,
    pub bytes: u64,
    pub range: Option<(u64, u64)>,
    pub time_taken: f32,
}

/// Interned strings: requests refer to them by index.
#[derive(Debug, Default)]
pub struct Strings {
    values: Vec<String>,
    index: HashMap<String, u32>,
}

impl Strings {
    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.values.len() as u32;
        self.values.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }

    pub fn get(&self, i: u32) -> &str {
        &self.values[i as usize]
    }
}

pub struct Traffic {
    pub scenario: Scenario,
    pub sessions: Vec<SessionTruth>,
    /// Sorted by time.
    pub requests: Vec<Request>,
    pub strings: Strings,
}

impl Traffic {
    pub fn truth_of(&self, session_id: &str) -> Option<&SessionTruth> {
        self.sessions.iter().find(|s| s.session_id == session_id)
    }
}

/// Simulates the scenario.
pub fn generate(scenario: &Scenario) -> Traffic {
    let mut sim = player::Simulation::new(scenario);
    sim.run();
    let (sessions, mut requests, strings) = sim.finish();
    requests.sort_by(|a, b| a.ts.total_cmp(&b.ts));
    Traffic { scenario: scenario.clone(), sessions, requests, strings }
}
