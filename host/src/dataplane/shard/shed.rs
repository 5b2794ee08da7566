//! What a queue sheds when it cannot keep up: the SYN proxy's answers to sources it has
//! never seen complete a handshake.
//!
//! Under a SYN flood the proxy answers every SYN with a cookie. Each answer is a packet
//! written back through the device, which costs the queue more than reading the SYN did; a
//! flood faster than the queue then fills the device's queue, and the kernel drops packets
//! there at random — legitimate clients' SYNs, ACKs and data among them, before ringvs sees
//! them (a lost SYN costs its client a 1 s retransmission, lost data 200 ms or more).
//!
//! So the I/O backend tells the queue when it is behind after an I/O batch
//! ([`Pipeline::behind`]: the TUN read found every buffer taken) and when the kernel
//! dropped packets for its device ([`Pipeline::lost`]: TUN's `tx_dropped`, the AF_XDP RX
//! ring full). A queue that lost packets, or was behind after a sixteenth of a tick's batches
//! (not a moment without its CPU, which a queue with time to spare catches up on in a few
//! batches), has fallen behind, and from then the queue answers SYNs from **unknown**
//! sources within a budget per tick: half of what it answered, halved at each tick it is
//! still behind and grown again by a sixteenth at each tick it is not. A backlog that stays
//! (behind after [`FAST_BEHIND`] batches and half of them since the tick) starts shedding at
//! once, not at the next tick: at ~180,000 SYNs a second a tick's flood is twice what the
//! TUN device's queue holds, so a tick's wait was enough for the kernel to drop. For the
//! same reason a backlog that stays as long again while shedding halves the budget at once
//! (the tick then does not halve it again).
//! Sources that completed a handshake lately — a valid cookie, or an ESTABLISHED connection
//! — are **known** and answered outside the budget, up to [`KNOWN_PER_TICK`] SYNs a tick
//! each: a spoofed flood never completes a handshake, so it cannot become known, and the
//! clients that were there before it keep their service; a flood spoofing a known address
//! gets that address's allowance and then shares the budget.
//! Unknown clients keep a share: the budget never falls below [`MIN_BUDGET`] a tick (never
//! closed). The shed SYNs are counted (`ringvs_dropped_packets_total{reason="overload"}`);
//! their clients retransmit. After [`CALM_TICKS`] ticks without falling behind and without
//! shedding a SYN, the budget is gone: a flood the budget still holds back is still there, and
//! letting it all in again would only take the queue back to where it was (an IPv6 flood,
//! which no proxy answers, did that every 2.3 s in the lab: each time, the kernel dropped a
//! burst, legitimate SYNs among them).
//!
//! Known sources are kept in a direct-mapped array of [`KNOWN_SLOTS`] addresses, indexed by
//! a keyed hash: bounded (16 KiB), a newer source takes an older one's slot.
//!
//! A new IPv6 client has no proxy to prove itself to (the proxy answers IPv4 only), and while
//! a flood outruns the queue its SYN competes with the flood for [`FORWARDED_PER_TICK`]: in
//! the lab, 0 of 18 new clients got through a 160,000-SYN/s flood. So a refused SYN of an
//! unknown IPv6 source is noted (a keyed digest of source, port and initial sequence number
//! in a direct-mapped array of [`FIRST_SLOTS`], allocated at the first refusal and kept), and the
//! same SYN seen again — the client's retransmission, 1 s later — is forwarded, up to
//! [`RETRIED_PER_TICK`] a tick: a random-source flood never sends a SYN twice. The newcomer
//! pays one retransmission (1 s; two when the flood took its note's slot meanwhile), the
//! price synauth asks of every client; a flood that does retransmit gets at most that share.
//!
//! [`Pipeline::behind`]: crate::dataplane::Pipeline::behind
//! [`Pipeline::lost`]: crate::dataplane::Pipeline::lost

use crate::conn::HashKey;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Answers to unknown sources a tick (100 ms) that shedding never goes under.
pub const MIN_BUDGET: u32 = 64;
/// Batches after which the backend was behind, since the tick, that start shedding before
/// the next tick (with half of the batches behind).
pub const FAST_BEHIND: u32 = 16;
/// Ticks without falling behind after which shedding stops (2 s).
pub const CALM_TICKS: u32 = 20;
/// SYNs from unknown sources a tick that a shedding queue still forwards to a service the
/// proxy cannot serve (IPv6), out of the budget: never grown. Such a SYN costs a
/// realserver's answer, two more packets through the queue and an entry for the SYN timeout,
/// and that cost lands after the queue has let it in, so a budget grown until the queue
/// falls behind again overshoots (in the lab, the kernel dropped ~40,000 packets in a 30 s
/// flood that way, legitimate SYNs among them); this share is what keeps unknown sources
/// from being closed out.
pub const FORWARDED_PER_TICK: u32 = 64;
/// Known sources a queue remembers.
pub const KNOWN_SLOTS: usize = 4096;
/// Refused IPv6 SYNs a shedding queue remembers for their retransmission (2 MiB): at a
/// flood of 160,000 refused SYNs a second, a note outlives the 1 s to its retransmission
/// with a chance of e^(-160000/2^19) ≈ 74 %.
pub const FIRST_SLOTS: usize = 1 << 19;
/// Retransmitted SYNs of unknown IPv6 sources a tick that a shedding queue forwards beyond
/// [`FORWARDED_PER_TICK`].
pub const RETRIED_PER_TICK: u32 = 64;
/// SYNs a tick a known source has answered beyond the budget (320 new connections a
/// second); past that it shares the unknown sources' budget, so that spoofing a known
/// address does not take the queue back to where it was.
pub const KNOWN_PER_TICK: u16 = 32;

/// A known source, and its SYNs answered in its last tick.
#[derive(Debug, Clone, Copy, Default)]
struct Known {
    addr: u32,
    tick: u16,
    used: u16,
}

/// One queue's shedding state.
#[derive(Debug)]
pub struct Shed {
    key: HashKey,
    /// I/O batches since the last tick, and those after which the backend was behind.
    passes: u32,
    /// See `passes`.
    behind_passes: u32,
    /// Batches, and those behind, since the tick or since the budget was last cut.
    run_passes: u32,
    /// See `run_passes`.
    run_behind: u32,
    /// The budget was cut since the tick (the tick does not halve it again).
    cut: bool,
    /// The device dropped packets since the last tick.
    lost: bool,
    /// Shedding now.
    on: bool,
    /// Unknown sources answered a tick while on.
    budget: u32,
    /// Left of this tick's budget.
    left: u32,
    /// Left of this tick's [`FORWARDED_PER_TICK`].
    left_forwarded: u32,
    /// What is left of this tick's [`RETRIED_PER_TICK`].
    left_retried: u32,
    /// Digests of refused IPv6 SYNs (source, port, ISN), [`FIRST_SLOTS`] once one was.
    first: Box<[u32]>,
    /// SYNs answered this tick (the first budget is half of it; the budget never grows past
    /// twice it).
    answered: u32,
    /// When it was last behind (ticks since the queue started).
    behind_at: u64,
    /// The tick in which it last refused a SYN.
    refused_at: u64,
    /// The last tick (ticks since the queue started).
    now: u64,
    /// Known sources (address 0: empty).
    known: Box<[Known]>,
    /// The tick, as [`Known::tick`] keeps it.
    tick: u16,
}

impl Shed {
    /// Nothing known, not shedding; `key` keys the known sources' hash.
    pub fn new(key: HashKey) -> Shed {
        Shed {
            key,
            passes: 0,
            behind_passes: 0,
            run_passes: 0,
            run_behind: 0,
            cut: false,
            lost: false,
            on: false,
            budget: 0,
            left: 0,
            left_forwarded: 0,
            left_retried: 0,
            first: Box::default(),
            answered: 0,
            behind_at: 0,
            refused_at: 0,
            now: 0,
            known: vec![Known::default(); KNOWN_SLOTS].into_boxed_slice(),
            tick: 0,
        }
    }

    /// splitmix64's finaliser.
    #[inline]
    fn mix(mut h: u64) -> u64 {
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }

    #[inline]
    fn slot(&self, id: u32) -> usize {
        // The finaliser over the keyed source (only sources that completed a handshake ever
        // go in: the key just keeps their slots unpredictable).
        let h = Self::mix(u64::from(id) ^ self.key.0[0]) ^ self.key.0[1];
        (h >> (64 - KNOWN_SLOTS.trailing_zeros())) as usize
    }

    /// The id an IPv6 source is known by: a keyed 32-bit digest of its whole address, never
    /// 0 (an IPv4 source's is its address). A spoofed source cannot aim at a known one's
    /// digest without the key, and a digest shared by chance only lends it that source's
    /// allowance ([`KNOWN_PER_TICK`]).
    #[inline]
    pub fn id6(&self, a: &Ipv6Addr) -> u32 {
        let v = u128::from(*a);
        let h = Self::mix((v >> 64) as u64 ^ self.key.0[1]);
        let h = Self::mix(h ^ v as u64 ^ self.key.0[0]);
        (h >> 32) as u32 | 1
    }

    /// `a` completed a handshake (or proved itself with a cookie).
    #[inline]
    pub fn know(&mut self, a: Ipv4Addr) {
        self.know_id(u32::from(a));
    }

    /// IPv6 source `a` completed a handshake.
    #[inline]
    pub fn know6(&mut self, a: &Ipv6Addr) {
        self.know_id(self.id6(a));
    }

    #[inline]
    fn know_id(&mut self, id: u32) {
        let i = self.slot(id);
        let k = &mut self.known[i];
        if k.addr != id {
            *k = Known {
                addr: id,
                tick: self.tick,
                used: 0,
            };
        }
    }

    /// True if `a` completed a handshake lately (and was not pushed out since).
    #[cfg(test)]
    pub fn known(&self, a: Ipv4Addr) -> bool {
        let v = u32::from(a);
        v != 0 && self.known[self.slot(v)].addr == v
    }

    /// An I/O batch went through.
    #[inline]
    pub fn pass(&mut self) {
        self.passes = self.passes.saturating_add(1);
        self.run_passes = self.run_passes.saturating_add(1);
    }

    /// The backend was behind after an I/O batch. A backlog that stays (behind after
    /// [`FAST_BEHIND`] batches and half of them) starts shedding now: the budget is half of
    /// what was answered since the tick (at least [`MIN_BUDGET`]), and what is left of this
    /// tick's is what that tick's share of [`MIN_BUDGET`] left. While shedding, a backlog that
    /// stays as long again halves the budget now (what is left of the tick's too), not at the
    /// tick: at 190,000 SYNs a second a tick is twice what the TUN device's queue holds.
    #[inline]
    pub fn behind(&mut self) {
        self.behind_passes = self.behind_passes.saturating_add(1);
        self.run_behind = self.run_behind.saturating_add(1);
        if self.run_behind >= FAST_BEHIND && self.run_behind.saturating_mul(2) >= self.run_passes {
            self.backlog();
        }
    }

    /// A backlog that stays: on, or the budget cut.
    #[cold]
    fn backlog(&mut self) {
        if self.on {
            self.budget = (self.budget / 2).max(MIN_BUDGET);
            self.left = self.left.min(self.budget);
            self.cut = true;
        } else {
            self.on = true;
            self.budget = (self.answered / 2).max(MIN_BUDGET);
            self.left = MIN_BUDGET.saturating_sub(self.answered);
            self.left_forwarded = FORWARDED_PER_TICK;
        }
        self.behind_at = self.now;
        (self.run_passes, self.run_behind) = (0, 0);
    }

    /// The device dropped packets (the queue had fallen behind).
    pub fn lost(&mut self) {
        self.lost = true;
    }

    /// True if the device dropped packets, or the backend was behind after at least 2
    /// batches and a sixteenth of them, since the last tick. A queue with time to spare is
    /// behind only when it loses its CPU for a moment (the backlog it finds then is gone a
    /// few batches later); one without is behind after nearly every batch.
    fn fell_behind(&mut self) -> bool {
        let (passes, behind) = (
            std::mem::take(&mut self.passes),
            std::mem::take(&mut self.behind_passes),
        );
        std::mem::take(&mut self.lost) || (behind >= 2 && behind.saturating_mul(16) >= passes)
    }

    /// True if shedding.
    #[cfg(test)]
    pub fn on(&self) -> bool {
        self.on
    }

    /// A SYN from `a` the proxy would answer: true if it may (a known source up to
    /// [`KNOWN_PER_TICK`] a tick, beyond that and an unknown one while the tick's budget
    /// lasts).
    #[inline]
    pub fn admit(&mut self, a: Ipv4Addr) -> bool {
        if !self.on {
            self.answered += 1;
            return true;
        }
        let v = u32::from(a);
        self.known_allowance(v) || self.take_budget()
    }

    /// A SYN from IPv6 source `a` (its port and initial sequence number `isn`) for a
    /// service the proxy cannot serve, which the queue would forward: as [`Shed::admit`],
    /// but an unknown source's only within [`FORWARDED_PER_TICK`] too, or as the
    /// retransmission of a SYN refused before ([`RETRIED_PER_TICK`]).
    #[inline]
    pub fn admit6(&mut self, a: &Ipv6Addr, port: u16, isn: u32) -> bool {
        if !self.on {
            self.answered += 1;
            return true;
        }
        let id = self.id6(a);
        if self.known_allowance(id) {
            return true;
        }
        if self.left_forwarded > 0 && self.take_budget() {
            self.left_forwarded -= 1;
            return true;
        }
        self.refused_at = self.now;
        self.retransmitted(id, port, isn)
    }

    /// A refused SYN of unknown IPv6 source `id`: true (and counted) if it is the
    /// retransmission of one refused before and this tick's [`RETRIED_PER_TICK`] has some
    /// left; else it is noted, for its own retransmission. (The flood's path while shedding:
    /// every refused SYN comes here, so it is not marked cold.)
    #[inline]
    fn retransmitted(&mut self, id: u32, port: u16, isn: u32) -> bool {
        if self.first.is_empty() {
            self.first = vec![0; FIRST_SLOTS].into_boxed_slice();
        }
        let h = Self::mix((u64::from(id) << 32 | u64::from(isn)) ^ self.key.0[1]);
        let h = Self::mix(h ^ u64::from(port) ^ self.key.0[0]);
        let i = (h >> (64 - FIRST_SLOTS.trailing_zeros())) as usize;
        let tag = h as u32 | 1;
        if self.first[i] != tag {
            self.first[i] = tag;
            return false;
        }
        if self.left_retried == 0 {
            return false;
        }
        self.left_retried -= 1;
        self.first[i] = 0;
        self.answered += 1;
        true
    }

    /// While shedding: true (and counted) if source `v` is known and has some of this
    /// tick's [`KNOWN_PER_TICK`] left.
    #[inline]
    fn known_allowance(&mut self, v: u32) -> bool {
        let (i, tick) = (self.slot(v), self.tick);
        let k = &mut self.known[i];
        if v == 0 || k.addr != v {
            return false;
        }
        if k.tick != tick {
            k.tick = tick;
            k.used = 0;
        }
        if k.used >= KNOWN_PER_TICK {
            return false;
        }
        k.used += 1;
        self.answered += 1;
        true
    }

    /// While shedding: true (and counted) if this tick's budget for unknown sources has
    /// some left; a refusal is remembered (shedding lasts while it refuses).
    #[inline]
    fn take_budget(&mut self) -> bool {
        if self.left == 0 {
            self.refused_at = self.now;
            return false;
        }
        self.left -= 1;
        self.answered += 1;
        true
    }

    /// Once a tick (`now`: ticks since the queue started): halves the budget if the backend
    /// fell behind (the first time: half of what was answered since the last tick), grows
    /// it by a sixteenth if not (up to twice what came), and stops after [`CALM_TICKS`]
    /// ticks without falling behind or refusing a SYN.
    pub fn tick(&mut self, now: u64) {
        self.tick = now as u16;
        self.now = now;
        let answered = std::mem::take(&mut self.answered);
        let cut = std::mem::take(&mut self.cut);
        (self.run_passes, self.run_behind) = (0, 0);
        if self.fell_behind() {
            self.budget = if cut {
                self.budget
            } else if self.on {
                self.budget / 2
            } else {
                answered / 2
            }
            .max(MIN_BUDGET);
            self.on = true;
            self.behind_at = now;
        } else if self.on {
            if now.saturating_sub(self.behind_at.max(self.refused_at)) >= u64::from(CALM_TICKS) {
                self.on = false;
            } else {
                // Grown by a sixteenth, but not past twice what came: a budget far above the
                // flood would take the next fall a tick longer to bring down.
                let grown = self.budget.saturating_add(self.budget / 16 + 1);
                self.budget = grown.min(answered.saturating_mul(2).max(MIN_BUDGET));
            }
        }
        self.left = self.budget;
        self.left_forwarded = FORWARDED_PER_TICK;
        self.left_retried = RETRIED_PER_TICK;
    }

    /// The tick's budget for unknown sources (while on).
    #[cfg(test)]
    pub fn budget(&self) -> u32 {
        self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u32) -> Ipv4Addr {
        Ipv4Addr::from(0x0a00_0000 | i)
    }

    fn shed() -> Shed {
        Shed::new(HashKey([0x1234_5678_9abc_def0, 0x0fed_cba9_8765_4321]))
    }

    /// Behind after every batch of a tick.
    fn lag(s: &mut Shed) {
        for _ in 0..4 {
            s.pass();
            s.behind();
        }
    }

    /// While shedding, a refused SYN of an unknown IPv6 source that comes again (same
    /// source, port and ISN: its client's retransmission) goes through, at most
    /// [`RETRIED_PER_TICK`] a tick; a random-source flood's SYNs never do.
    #[test]
    fn a_refused_ipv6_syn_sent_again_goes_through_as_a_retransmission() {
        let mut s = shed();
        let a =
            |i: u32| Ipv6Addr::from(0xfd77_0000_0000_0000_0000_0001_0000_0000u128 + u128::from(i));
        // A flood of distinct SYNs in each tick: the tick's forwarded share, nothing else.
        let flood = |s: &mut Shed, base: u32| {
            (base..base + 10_000)
                .filter(|&i| s.admit6(&a(i), 1000, i))
                .count() as u32
        };
        s.lost();
        s.tick(1);
        assert!(s.on());
        assert_eq!(flood(&mut s, 0), FORWARDED_PER_TICK);
        let new = a(1 << 30);
        assert!(
            !s.admit6(&new, 40_000, 7),
            "a newcomer's SYN, refused and noted"
        );
        s.lost();
        s.tick(2);
        assert_eq!(flood(&mut s, 10_000), FORWARDED_PER_TICK);
        assert!(!s.admit6(&new, 40_001, 7), "another port is another SYN");
        assert!(!s.admit6(&new, 40_000, 8), "another ISN is another SYN");
        assert!(s.admit6(&new, 40_000, 7), "its retransmission goes through");
        assert!(!s.admit6(&new, 40_000, 7), "once: the note is spent");
        // A flood that sends every SYN twice gets RETRIED_PER_TICK a tick.
        s.lost();
        s.tick(3);
        assert_eq!(flood(&mut s, 20_000), FORWARDED_PER_TICK);
        let twice = (0..2)
            .map(|_| {
                (0..1_000)
                    .filter(|&i| s.admit6(&a(50_000 + i), 2, i))
                    .count()
            })
            .sum::<usize>();
        assert_eq!(twice, RETRIED_PER_TICK as usize);
        // Not shedding: everyone goes through, nothing is noted.
        let mut calm = shed();
        assert!(calm.admit6(&new, 40_000, 7) && calm.first.is_empty());
    }

    #[test]
    fn a_moment_behind_is_not_falling_behind() {
        let mut s = shed();
        unknown_tick(&mut s, 1_000, 1);
        // Behind after 1 batch in 100: lost the CPU for a moment.
        for i in 0..1_000 {
            s.pass();
            if i % 10 == 0 && i < 100 {
                s.behind();
            }
        }
        s.tick(1);
        assert!(!s.on());
        // Behind once only.
        s.behind();
        s.tick(2);
        assert!(!s.on());
        // Packets lost: fallen behind.
        let mut l = shed();
        l.lost();
        l.tick(1);
        assert!(l.on());
        // Behind after an eighth of the batches (a sixteenth is enough): falling behind.
        for i in 0..800 {
            s.pass();
            if i % 8 == 0 {
                s.behind();
            }
        }
        s.tick(3);
        assert!(s.on());
    }

    /// Answers `n` unknown SYNs in one tick: how many got through.
    fn unknown_tick(s: &mut Shed, n: u32, base: u32) -> u32 {
        (0..n).filter(|i| s.admit(addr(base + i))).count() as u32
    }

    #[test]
    fn a_backlog_that_stays_sheds_before_the_tick() {
        let mut s = shed();
        assert_eq!(unknown_tick(&mut s, 1_000, 1), 1_000);
        // Behind after every batch: on after FAST_BEHIND of them, not at the tick.
        for i in 0..FAST_BEHIND {
            s.pass();
            s.behind();
            assert_eq!(s.on(), i + 1 == FAST_BEHIND, "batch {i}");
        }
        // This tick already answered more than MIN_BUDGET: nothing more for unknown sources;
        // a known one keeps its allowance.
        s.know(addr(5_000_000));
        assert_eq!(unknown_tick(&mut s, 1_000, 10_000), 0);
        assert!(s.admit(addr(5_000_000)));
        // The next tick, still behind: half of the first budget (half of the 1,000 answered).
        for _ in 0..4 {
            s.pass();
            s.behind();
        }
        s.tick(1);
        assert_eq!(s.budget(), 250);
        assert_eq!(unknown_tick(&mut s, 1_000, 20_000), 250);

        // Behind after under half of the batches: left to the tick.
        let mut s = shed();
        for _ in 0..(FAST_BEHIND * 3) {
            s.pass();
            s.pass();
            s.pass();
            s.behind();
        }
        assert!(!s.on());
    }

    #[test]
    fn a_backlog_that_stays_while_shedding_halves_the_budget_at_once() {
        let mut s = shed();
        assert_eq!(unknown_tick(&mut s, 4_000, 1), 4_000);
        lag(&mut s);
        s.tick(1);
        assert_eq!(s.budget(), 2_000);
        assert_eq!(unknown_tick(&mut s, 100, 10_000), 100);
        // Behind after every batch again: halved after FAST_BEHIND of them, not before, and
        // what is left of this tick with it.
        for i in 0..FAST_BEHIND {
            assert_eq!(s.budget(), 2_000, "batch {i}");
            s.pass();
            s.behind();
        }
        assert_eq!(s.budget(), 1_000);
        assert_eq!(unknown_tick(&mut s, 5_000, 20_000), 1_000);
        // As long again: halved again.
        for _ in 0..FAST_BEHIND {
            s.pass();
            s.behind();
        }
        assert_eq!(s.budget(), 500);
        // The tick does not halve it a third time, but the next one behind does.
        s.tick(2);
        assert_eq!(s.budget(), 500);
        lag(&mut s);
        s.tick(3);
        assert_eq!(s.budget(), 250);
        // Behind after under half of the batches: no cut.
        for _ in 0..FAST_BEHIND * 2 {
            s.pass();
            s.pass();
            s.pass();
            s.behind();
        }
        assert_eq!(s.budget(), 250);
    }

    #[test]
    fn answers_everyone_until_behind() {
        let mut s = shed();
        assert_eq!(unknown_tick(&mut s, 10_000, 1), 10_000);
        s.tick(1);
        assert!(!s.on());
        assert_eq!(unknown_tick(&mut s, 10_000, 1), 10_000);
    }

    #[test]
    fn behind_halves_what_unknown_sources_get_and_known_ones_keep_theirs() {
        let mut s = shed();
        let client = Ipv4Addr::new(10, 77, 0, 2);
        s.know(client);
        assert_eq!(unknown_tick(&mut s, 10_000, 100), 10_000);
        lag(&mut s);
        s.tick(1);
        assert!(s.on());
        assert_eq!(s.budget(), 5_000);
        assert_eq!(unknown_tick(&mut s, 10_000, 100), 5_000);
        // Known: beyond the budget, up to its allowance a tick.
        assert_eq!(
            (0..100).filter(|_| s.admit(client)).count(),
            KNOWN_PER_TICK as usize
        );
        lag(&mut s);
        s.tick(2);
        assert_eq!(unknown_tick(&mut s, 10_000, 100), 2_500);
        // Never under the floor.
        for t in 3..23 {
            lag(&mut s);
            s.tick(t);
        }
        assert_eq!(s.budget(), MIN_BUDGET);
        assert_eq!(unknown_tick(&mut s, 10_000, 100), MIN_BUDGET);
        assert!(s.admit(client), "a new tick, a new allowance");
        // A flood spoofing the known address: its allowance, then the budget it shares.
        s.tick(40);
        let got = (0..10_000).filter(|_| s.admit(client)).count();
        assert_eq!(got, KNOWN_PER_TICK as usize + s.budget() as usize);
    }

    #[test]
    fn calm_grows_the_budget_then_ends_shedding() {
        let mut s = shed();
        unknown_tick(&mut s, 1_000, 1);
        lag(&mut s);
        s.tick(10);
        let first = s.budget();
        unknown_tick(&mut s, 10_000, 1);
        s.tick(11);
        assert!(s.budget() > first, "calm grows the budget");
        // Not past twice what came.
        s.tick(12);
        assert_eq!(s.budget(), MIN_BUDGET, "nothing came");
        // Never behind again, but the flood goes on past the budget: still shedding.
        let end = 10 + 2 * u64::from(CALM_TICKS);
        for t in 13..end {
            unknown_tick(&mut s, 10_000, 1);
            s.tick(t);
            assert!(s.on(), "a flood still held back at tick {t}");
        }
        assert!(s.budget() < 10_000);
        // The flood is over: off CALM_TICKS after the tick that last refused a SYN (the one
        // that began at `end - 2`).
        for t in end..end - 2 + u64::from(CALM_TICKS) {
            assert_eq!(unknown_tick(&mut s, 10, 1), 10);
            s.tick(t);
            assert!(s.on(), "{t}");
        }
        s.tick(end - 2 + u64::from(CALM_TICKS));
        assert!(!s.on(), "off after {CALM_TICKS} calm ticks");
        assert_eq!(unknown_tick(&mut s, 50_000, 1), 50_000);
        // A clock that jumps (an idle queue ticks when it wakes) ends it at once.
        lag(&mut s);
        s.tick(100);
        assert!(s.on());
        s.tick(100 + u64::from(CALM_TICKS));
        assert!(!s.on());
    }

    #[test]
    fn known_sources_are_kept_by_address() {
        let mut s = shed();
        assert!(!s.known(addr(7)));
        assert!(!s.known(Ipv4Addr::UNSPECIFIED));
        s.know(addr(7));
        assert!(s.known(addr(7)));
        assert!(!s.known(addr(8)));
        // A bounded memory: many sources leave most of the first ones out, never grow it.
        for i in 0..100_000 {
            s.know(addr(1_000 + i));
        }
        assert_eq!(s.known.len(), KNOWN_SLOTS);
        let kept = (0..100_000).filter(|i| s.known(addr(1_000 + i))).count();
        assert!(kept <= KNOWN_SLOTS && kept > KNOWN_SLOTS / 2, "{kept}");
    }
}
