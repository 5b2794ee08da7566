//! secure_tcp (IPVS `ip_vs_proto_tcp.c`, `update_defense_level` in `ip_vs_ctl.c`): under
//! memory pressure, switch the service to a TCP state table in which only the realserver's
//! answer establishes a connection, with tight timeouts for half-open entries.
//!
//! Level 0 is IPVS's `tcp_states`, level 1 its `tcp_states_dos`. The switch is "use the other
//! table", decided once a second: `set-level(1)` when the strategy turns on, `set-level(0)`
//! when it turns off, nothing otherwise. Under NAT the director sees both directions; in the
//! dos table a client's ACK leaves a SYN_RECV entry where it is and a SYN_RECV entry answered
//! by the realserver's SYN-ACK parks in SYNACK until the realserver talks again, so a spoofed
//! SYN-then-ACK flood cannot fill the table with ESTABLISHED (15-minute) entries: they stay
//! embryonic and expire after `syn_recv_timeout` / `synack_timeout`.
//!
//! With `syn_proxy = true` (not IPVS: ringvs's addition) the switch to level 1 also holds the
//! host's SYN proxy on for the service (`syn-proxy(true)`), and the switch back releases it:
//! under memory pressure spoofed SYNs then cost no table entry at all, in a service whose
//! `syn_proxy` is `"auto"` (the host refuses the request otherwise).
//!
//! The tables are IPVS's as in current kernels, written once in `ringvs-abi` (and checked
//! there against `ip_vs_proto_tcp.c` cell by cell); this plugin hands them to the host.

#![no_std]

use ringvs_sdk::prelude::*;
use ringvs_sdk::pressure::Pressure;

/// Default SYN_RECV timeout at level 1, seconds (IPVS 2.4's `vs_timeout_table_dos`).
pub const SYN_RECV_TIMEOUT: u32 = 10;
/// Default SYNACK timeout at level 1, seconds.
pub const SYNACK_TIMEOUT: u32 = 10;

/// The strategy's mode and the level this instance last asked for.
#[derive(Debug)]
pub struct SecureTcp {
    pressure: Pressure,
    syn_recv_timeout: u32,
    synack_timeout: u32,
    /// Hold the SYN proxy on at level 1.
    syn_proxy: bool,
    /// The level last set (IPVS's `old_secure_tcp`, here per instance): the host starts at 0.
    level: u8,
}

impl Default for SecureTcp {
    fn default() -> Self {
        SecureTcp {
            pressure: Pressure::new(1),
            syn_recv_timeout: SYN_RECV_TIMEOUT,
            synack_timeout: SYNACK_TIMEOUT,
            syn_proxy: false,
            level: 0,
        }
    }
}

impl Defense for SecureTcp {
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        let [a, b, c] = Pressure::KEYS;
        config.check_keys(&[a, b, c, "syn_recv_timeout", "synack_timeout", "syn_proxy"])?;
        self.pressure = Pressure::from_config(config, 1)?;
        self.syn_recv_timeout = config.parse_or("syn_recv_timeout", SYN_RECV_TIMEOUT)?;
        self.synack_timeout = config.parse_or("synack_timeout", SYNACK_TIMEOUT)?;
        self.syn_proxy = config.parse_or("syn_proxy", false)?;
        Ok(())
    }

    fn levels(&self) -> Vec<StateTable> {
        vec![
            StateTable::normal(),
            StateTable::dos()
                .with_timeout(TcpState::SynRecv, self.syn_recv_timeout)
                .with_timeout(TcpState::SynAck, self.synack_timeout),
        ]
    }

    fn tick(&mut self, stats: &TickStats, _table: &dyn ringvs_sdk::Table) -> Vec<Action> {
        let want = u8::from(self.pressure.update(stats).on);
        if want == self.level {
            return Vec::new();
        }
        self.level = want;
        let mut out = vec![Action::SetLevel(want)];
        if self.syn_proxy {
            out.push(Action::SynProxy(want == 1));
        }
        out
    }
}

export_defense!(SecureTcp);

#[cfg(test)]
mod tests {
    use super::*;
    use ringvs_sdk::testing::{flow, DefenseHarness, MockTable};
    use TcpState::{
        Close as sCL, CloseWait as sCW, Established as sES, None as sNO, SynAck as sSA,
        SynRecv as sSR, TimeWait as sTW,
    };

    const IN: usize = 0;
    const OUT: usize = 1;
    const IN_ONLY: usize = 2;
    const SYN: usize = 0;
    const FIN: usize = 1;
    const ACK: usize = 2;
    const RST: usize = 3;

    /// The next state as the host computes it: `(dir * 4 + event) * 11 + state`.
    fn next(t: &StateTable, dir: usize, ev: usize, s: TcpState) -> TcpState {
        t.transitions[(dir * 4 + ev) * 11 + s as usize]
    }

    /// One connection's life: (direction, event, expected state after), from NONE.
    fn walk(t: &StateTable, steps: &[(usize, usize, TcpState)]) {
        let mut s = TcpState::None;
        for (i, (d, e, want)) in steps.iter().enumerate() {
            s = next(t, *d, *e, s);
            assert_eq!(s, *want, "step {i}: dir {d} event {e}");
        }
    }

    fn levels(config: &[(&str, &str)]) -> Vec<StateTable> {
        DefenseHarness::<SecureTcp>::new(config).unwrap().levels()
    }

    /// A queue's statistics with `avail` of 8000 table bytes free (threshold 1000).
    fn mem(avail: u64) -> TickStats {
        TickStats {
            queues: 1,
            memory: 8000 - avail,
            memory_limit: 8000,
            ..TickStats::default()
        }
    }

    fn run(config: &[(&str, &str)], avails: &[u64]) -> Vec<Vec<Action>> {
        let mut h = DefenseHarness::<SecureTcp>::new(config).unwrap();
        let t = MockTable::new(0, Vec::new());
        avails.iter().map(|a| h.tick(&mem(*a), &t)).collect()
    }

    #[test]
    fn two_levels_normal_then_dos() {
        let l = levels(&[]);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0], StateTable::normal());
        assert_eq!(l[1].transitions, StateTable::dos().transitions);
    }

    #[test]
    fn secure_tcp_differs_from_normal_exactly_where_ipvs_does() {
        // (row, column, tcp_states, tcp_states_dos), read off ip_vs_proto_tcp.c.
        let mut want = vec![
            (0, 10, sSR, sSA), // input syn on SYNACK
            (1, 10, sTW, sSA), // input fin on SYNACK
            (2, 3, sES, sSR),  // input ack on SYN_RECV: the client cannot establish
            (2, 10, sES, sSA), // input ack on SYNACK
            (3, 10, sSR, sCL), // input rst on SYNACK
            (4, 3, sSR, sSA),  // output syn (SYN-ACK) on SYN_RECV
            (4, 10, sSR, sSA), // output syn on SYNACK
            (8, 0, sSR, sSA),  // input-only syn on NONE
        ];
        for col in 4..=9 {
            want.push((8, col, sSR, sSA)); // input-only syn on FW TW CL CW LA LI
        }
        want.push((8, 10, sSR, sSA));
        want.sort_by_key(|(r, c, _, _)| (*r, *c));
        let (normal, dos) = (
            StateTable::normal().transitions,
            StateTable::dos().transitions,
        );
        let mut got = Vec::new();
        for r in 0..12 {
            for c in 0..11 {
                let i = r * 11 + c;
                if normal[i] != dos[i] {
                    got.push((r, c, normal[i], dos[i]));
                }
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn normal_table_lets_a_client_ack_establish() {
        // The weakness: a spoofed SYN then ACK establishes without the realserver.
        let l = levels(&[]);
        walk(&l[0], &[(IN, SYN, sSR), (IN, ACK, sES)]);
        // A full NAT handshake and a client close.
        walk(
            &l[0],
            &[
                (IN, SYN, sSR),
                (OUT, SYN, sSR),
                (IN, ACK, sES),
                (IN, FIN, sCW),
                (OUT, FIN, sTW),
            ],
        );
    }

    #[test]
    fn dos_table_establishes_only_on_the_servers_answer() {
        let l = levels(&[]);
        // Client SYN, client ACK, more client ACKs and SYNs: never established.
        walk(
            &l[1],
            &[
                (IN, SYN, sSR),
                (IN, ACK, sSR),
                (IN, SYN, sSR),
                (IN, ACK, sSR),
            ],
        );
        // NAT handshake: the SYN-ACK parks it in SYNACK, the client's ACK keeps it there,
        // the realserver's next segment establishes it.
        walk(
            &l[1],
            &[
                (IN, SYN, sSR),
                (OUT, SYN, sSA),
                (IN, ACK, sSA),
                (OUT, ACK, sES),
                (IN, ACK, sES),
            ],
        );
        // A client RST on SYNACK closes; on SYN_RECV it is ignored (blind RST).
        assert_eq!(next(&l[1], IN, RST, sSA), sCL);
        assert_eq!(next(&l[1], IN, RST, sSR), sSR);
        // Without replies (input-only), a SYN on a fresh entry goes to SYNACK.
        assert_eq!(next(&l[1], IN_ONLY, SYN, sNO), sSA);
        assert_eq!(next(&l[0], IN_ONLY, SYN, sNO), sSR);
    }

    #[test]
    fn timeouts_tight_for_embryonic_states_at_level_1_only() {
        let l = levels(&[]);
        assert_eq!(l[0].timeouts, [0; 12]);
        let mut want = [0; 12];
        want[TcpState::SynRecv as usize] = 10;
        want[TcpState::SynAck as usize] = 10;
        assert_eq!(l[1].timeouts, want);
        let l = levels(&[("syn_recv_timeout", "5"), ("synack_timeout", "0")]);
        want[TcpState::SynRecv as usize] = 5;
        want[TcpState::SynAck as usize] = 0; // the service's own
        assert_eq!(l[1].timeouts, want);
    }

    #[test]
    fn automatic_mode_follows_memory() {
        // Threshold 1000 bytes (1/8 of 8000): 999 available is short, 1000 is not.
        let got = run(&[], &[5000, 999, 500, 1000, 7000, 0, 0, 1000]);
        let want: Vec<Vec<Action>> = vec![
            vec![],
            vec![Action::SetLevel(1)],
            vec![],
            vec![Action::SetLevel(0)],
            vec![],
            vec![Action::SetLevel(1)],
            vec![],
            vec![Action::SetLevel(0)],
        ];
        assert_eq!(got, want);
        // Mode 2 is "on while memory is short": the same.
        assert_eq!(
            run(&[("mode", "2")], &[500, 5000]),
            [vec![Action::SetLevel(1)], vec![Action::SetLevel(0)]]
        );
    }

    #[test]
    fn syn_proxy_follows_the_level_when_asked() {
        let got = run(&[("syn_proxy", "true")], &[5000, 999, 500, 1000]);
        let want: Vec<Vec<Action>> = vec![
            vec![],
            vec![Action::SetLevel(1), Action::SynProxy(true)],
            vec![],
            vec![Action::SetLevel(0), Action::SynProxy(false)],
        ];
        assert_eq!(got, want);
        assert!(run(&[("syn_proxy", "false")], &[999])[0] == [Action::SetLevel(1)]);
    }

    #[test]
    fn mode_moves_between_1_and_2() {
        let mut h = DefenseHarness::<SecureTcp>::new(&[]).unwrap();
        let t = MockTable::new(0, Vec::new());
        let mut modes = Vec::new();
        for a in [5000, 500, 500, 5000] {
            h.tick(&mem(a), &t);
            modes.push(h.instance().pressure.mode());
        }
        assert_eq!(modes, [1, 2, 2, 1]);
    }

    #[test]
    fn modes_0_and_3() {
        assert!(run(&[("mode", "0")], &[0, 0, 8000])
            .iter()
            .all(Vec::is_empty));
        assert_eq!(
            run(&[("mode", "3")], &[8000, 0, 8000]),
            [vec![Action::SetLevel(1)], vec![], vec![]]
        );
    }

    #[test]
    fn system_memory_and_explicit_threshold() {
        let st = |avail: u64| TickStats {
            queues: 2,
            system_available: avail,
            ..TickStats::default()
        };
        let mut h = DefenseHarness::<SecureTcp>::new(&[("memory", "system")]).unwrap();
        let t = MockTable::new(0, Vec::new());
        assert_eq!(h.tick(&st(4 << 20), &t), []);
        assert_eq!(h.tick(&st((4 << 20) - 1), &t), [Action::SetLevel(1)]);
        let mut h =
            DefenseHarness::<SecureTcp>::new(&[("memory", "system"), ("amemthresh", "100")])
                .unwrap();
        assert_eq!(h.tick(&st(100), &t), []);
        assert_eq!(h.tick(&st(99), &t), [Action::SetLevel(1)]);
    }

    #[test]
    fn admits_everything() {
        let mut h = DefenseHarness::<SecureTcp>::new(&[("mode", "3")]).unwrap();
        let f = flow("10.77.0.2:40000", "10.77.100.100:80");
        let heavy = SourceStats {
            new_flows: u32::MAX,
            concurrent: u32::MAX,
        };
        assert_eq!(h.admit(&f, heavy), Verdict::Accept);
    }

    #[test]
    fn refuses_bad_config() {
        for (k, v) in [
            ("syn_recv", "10"),
            ("syn_recv_timeout", "10s"),
            ("synack_timeout", "-1"),
            ("mode", "7"),
            ("syn_proxy", "yes"),
        ] {
            assert!(
                DefenseHarness::<SecureTcp>::new(&[(k, v)]).is_err(),
                "{k} = {v} accepted"
            );
        }
    }
}
