//! When a service's new connections go through the SYN proxy: its configured mode, a
//! defense plugin's request, and — in `auto` mode — the queue's own reading of the pressure,
//! taken every tick (100 ms).
//!
//! `auto` switches the proxy on, for a service in a queue, when any of these holds:
//! - the queue's table is at least half full ([`ON_FILL`]);
//! - handshakes pile up: the queue holds at least [`ON_EMBRYONIC`] entries (or 1/128 of its
//!   capacity) that never completed one — what a SYN flood leaves behind;
//! - new TCP flows arrive at [`ON_RATE`] a second or more and at least 8 times the rate the
//!   service had while the proxy was off (its history, an exponential average).
//!
//! While on, the pressure shows as cookies that nobody returns. The proxy goes off again
//! after [`CALM_TICKS`] (30 s) during which unanswered cookies stayed below
//! [`CALM_RATE`] a second and the table under 40 % full.

use crate::config::SynProxyMode;
use crate::conn::TICKS_PER_SEC;

/// Table fill (percent) at which `auto` turns the proxy on.
pub const ON_FILL: u64 = 50;
/// Table fill (percent) under which the proxy may go off.
pub const OFF_FILL: u64 = 40;
/// Half-open TCP entries in a queue at which `auto` turns the proxy on.
pub const ON_EMBRYONIC: u64 = 1024;
/// New TCP flows a second (per queue) from which a jump against the history counts.
pub const ON_RATE: u32 = 20_000;
/// Unanswered cookies a second (per queue) below which the flood is over.
pub const CALM_RATE: u32 = 1_000;
/// Ticks of calm before the proxy goes off (30 s).
pub const CALM_TICKS: u32 = 30 * TICKS_PER_SEC;

/// A service's SYN-proxy state in one queue.
#[derive(Debug, Clone, Default)]
pub struct ProxyRt {
    /// The configured mode (only TCP services can be proxied; UDP ones stay off).
    pub mode: Mode,
    /// A defense plugin asked for it (`syn-proxy` action).
    pub forced: bool,
    /// `auto` decided it is on.
    pub auto_on: bool,
    /// Ticks of calm so far (while on).
    calm: u32,
    /// New TCP flows a tick while off, ×16 (exponential average, 1/16 per tick).
    history: u32,
    /// This tick: SYNs for new flows, cookies sent, cookies returned valid.
    pub syns: u32,
    /// See `syns`.
    pub cookies: u32,
    /// See `syns`.
    pub verified: u32,
}

/// The configured mode, as the queue applies it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Never (UDP services, or `syn_proxy = "off"`).
    #[default]
    Off,
    /// Under pressure.
    Auto,
    /// Always.
    On,
}

impl Mode {
    /// The mode of a service: its configuration, off for anything but a TCP service whose
    /// realservers all answer through the director (`proxyable`).
    pub fn of(cfg: SynProxyMode, proxyable: bool) -> Mode {
        match (cfg, proxyable) {
            (_, false) | (SynProxyMode::Off, _) => Mode::Off,
            (SynProxyMode::Auto, true) => Mode::Auto,
            (SynProxyMode::On, true) => Mode::On,
        }
    }
}

/// What the queue's table looks like this tick.
#[derive(Debug, Clone, Copy)]
pub struct Pressure {
    /// Live entries.
    pub entries: u64,
    /// Capacity.
    pub capacity: u64,
    /// TCP entries that never completed a handshake.
    pub embryonic: u64,
}

impl ProxyRt {
    /// True if new connections go through the proxy now.
    #[inline]
    pub fn active(&self) -> bool {
        match self.mode {
            Mode::Off => false,
            Mode::On => true,
            Mode::Auto => self.auto_on || self.forced,
        }
    }

    /// A new TCP flow is about to be scheduled without the proxy: in `auto` mode, if the
    /// queue already holds `embryonic` half-open entries (see [`ON_EMBRYONIC`]), the proxy
    /// switches on now rather than at the next tick, so a flood leaves at most that many
    /// entries behind. True if it is on.
    #[inline]
    pub fn check_embryonic(&mut self, embryonic: u64, capacity: u64) -> bool {
        if self.mode == Mode::Auto && !self.auto_on && embryonic >= ON_EMBRYONIC.max(capacity / 128)
        {
            self.auto_on = true;
            self.calm = 0;
        }
        self.active()
    }

    /// True if the proxy may take connections at all (cookies are checked).
    #[inline]
    pub fn enabled(&self) -> bool {
        self.mode != Mode::Off
    }

    /// Once a tick: reads the pressure, decides `auto`, and starts the tick's counts over.
    pub fn tick(&mut self, p: Pressure) {
        let (syns, cookies, verified) = (
            std::mem::take(&mut self.syns),
            std::mem::take(&mut self.cookies),
            std::mem::take(&mut self.verified),
        );
        if self.mode != Mode::Auto {
            self.auto_on = false;
            return;
        }
        let fill = p.entries * 100 / p.capacity.max(1);
        let per_sec = |n: u32| n.saturating_mul(TICKS_PER_SEC);
        if !self.auto_on {
            let embryonic_on = ON_EMBRYONIC.max(p.capacity / 128);
            let jump = per_sec(syns) >= ON_RATE
                && syns.saturating_mul(16) >= self.history.saturating_mul(8);
            if fill >= ON_FILL || p.embryonic >= embryonic_on || jump {
                self.auto_on = true;
                self.calm = 0;
            } else {
                // The history: 15/16 of what it was and 1/16 of this tick (×16 fixed point).
                self.history = self.history - self.history / 16 + syns;
            }
            return;
        }
        let unanswered = cookies.saturating_sub(verified);
        if per_sec(unanswered) < CALM_RATE && fill < OFF_FILL {
            self.calm += 1;
            if self.calm >= CALM_TICKS {
                self.auto_on = false;
                self.calm = 0;
            }
        } else {
            self.calm = 0;
        }
    }
}

/// New UDP flows a tick (per queue) from which a jump against the history is a flood.
pub const UDP_ON_PER_TICK: u32 = 2_000;
/// New UDP flows a tick (per queue) a flooded service admits at least.
pub const UDP_FLOOR_PER_TICK: u32 = 200;

/// A UDP service's guard against floods of new flows, in one queue. UDP has no handshake
/// that could prove a source, so a spoofed flood is recognised by its rate: new flows at
/// [`UDP_ON_PER_TICK`] a tick or more and 8 times the service's history. While it lasts, the
/// service admits new flows at twice its history (at least [`UDP_FLOOR_PER_TICK`] a tick)
/// and drops the rest before any work is done for them (`reason="flood_limit"`): the flood
/// cannot take the table, nor the queue's time from other services. Flows already in the
/// table are not touched. It ends after [`CALM_TICKS`] under the trigger.
#[derive(Debug, Clone, Default)]
pub struct FloodGuard {
    /// A flood is on.
    pub on: bool,
    calm: u32,
    /// New flows a tick while calm, ×16 (exponential average, 1/16 per tick).
    history: u32,
    /// New flows tried this tick.
    pub tried: u32,
    /// New flows admitted this tick.
    admitted: u32,
}

impl FloodGuard {
    /// A new flow asks to be admitted: true if it may go on.
    #[inline]
    pub fn admit(&mut self) -> bool {
        self.tried = self.tried.saturating_add(1);
        if self.on && self.admitted >= self.budget() {
            return false;
        }
        self.admitted += 1;
        true
    }

    /// New flows a tick a flooded service admits.
    fn budget(&self) -> u32 {
        (self.history / 8).max(UDP_FLOOR_PER_TICK)
    }

    /// Once a tick.
    pub fn tick(&mut self) {
        let tried = std::mem::take(&mut self.tried);
        self.admitted = 0;
        let jump =
            tried >= UDP_ON_PER_TICK && tried.saturating_mul(16) >= self.history.saturating_mul(8);
        if !self.on {
            if jump {
                self.on = true;
                self.calm = 0;
            } else {
                self.history = self.history - self.history / 16 + tried;
            }
            return;
        }
        if jump {
            self.calm = 0;
        } else {
            self.calm += 1;
            if self.calm >= CALM_TICKS {
                self.on = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calm() -> Pressure {
        Pressure {
            entries: 10,
            capacity: 100_000,
            embryonic: 2,
        }
    }

    fn auto() -> ProxyRt {
        ProxyRt {
            mode: Mode::Auto,
            ..ProxyRt::default()
        }
    }

    #[test]
    fn a_udp_flood_is_held_to_twice_the_history() {
        let mut g = FloodGuard::default();
        // A steady 300 new flows a tick for a while.
        for _ in 0..300 {
            for _ in 0..300 {
                assert!(g.admit());
            }
            g.tick();
        }
        assert!(!g.on);
        // A flood: 5000 a tick. The first tick goes through (it is what shows the jump).
        for _ in 0..5000 {
            g.admit();
        }
        g.tick();
        assert!(g.on);
        let admitted = (0..5000).filter(|_| g.admit()).count();
        assert_eq!(admitted, 600, "twice the history of 300");
        g.tick();
        // Calm again for thirty seconds: off.
        for _ in 0..CALM_TICKS {
            assert!(g.on);
            for _ in 0..300 {
                g.admit();
            }
            g.tick();
        }
        assert!(!g.on);
        // Cold start: the floor.
        let mut g = FloodGuard::default();
        for _ in 0..5000 {
            g.admit();
        }
        g.tick();
        assert_eq!(
            (0..5000).filter(|_| g.admit()).count(),
            UDP_FLOOR_PER_TICK as usize
        );
    }

    #[test]
    fn modes() {
        assert!(!ProxyRt::default().active());
        assert!(!ProxyRt::default().enabled());
        let on = ProxyRt {
            mode: Mode::On,
            ..ProxyRt::default()
        };
        assert!(on.active() && on.enabled());
        let mut a = auto();
        assert!(!a.active() && a.enabled());
        a.forced = true;
        assert!(a.active(), "a defense plugin switches it on");
        assert_eq!(
            Mode::of(SynProxyMode::On, false),
            Mode::Off,
            "UDP is never proxied"
        );
    }

    #[test]
    fn half_open_entries_or_a_full_table_switch_it_on() {
        let mut a = auto();
        a.tick(calm());
        assert!(!a.active());
        a.tick(Pressure {
            embryonic: 1024,
            ..calm()
        });
        assert!(a.active());
        let mut a = auto();
        a.tick(Pressure {
            entries: 50_000,
            ..calm()
        });
        assert!(a.active());
    }

    #[test]
    fn a_jump_against_history_switches_it_on_steady_load_does_not() {
        // A cold start at 30 000/s is a jump.
        let mut a = auto();
        a.syns = 3000;
        a.tick(calm());
        assert!(a.active());
        // Steady load learned: it stays off.
        let mut b = auto();
        for _ in 0..200 {
            b.syns = 500;
            b.tick(calm());
        }
        assert!(!b.active());
        b.syns = 5000; // 50 000/s, 10x its history
        b.tick(calm());
        assert!(b.active());
    }

    #[test]
    fn goes_off_after_thirty_calm_seconds_not_while_cookies_go_unanswered() {
        let mut a = auto();
        a.tick(Pressure {
            embryonic: 5000,
            ..calm()
        });
        assert!(a.active());
        // A flood: 40 000 cookies a second, 20 returned.
        for _ in 0..CALM_TICKS * 2 {
            a.cookies = 4000;
            a.verified = 2;
            a.tick(calm());
        }
        assert!(a.active());
        // Calm: legitimate clients return their cookies.
        for i in 0..CALM_TICKS {
            assert!(a.active(), "off after {i} ticks");
            a.cookies = 30;
            a.verified = 30;
            a.tick(calm());
        }
        assert!(!a.active());
    }
}
