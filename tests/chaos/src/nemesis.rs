//! Faults: kill -9 of the leader, a follower or every member; SIGSTOP
//! pauses; partitions (leader isolated, or a bridge where only the leader
//! sees both sides; packets blackholed or connections dropped); a slow disk (a member
//! restarted with a delay failpoint on every WAL fdatasync); a membership
//! change (a follower or the leader removed, wiped and added back:
//! `membership.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use corekv_wire::messages as w;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;

use crate::cluster::{Cluster, MEMBERS};
use crate::membership::{self, Rejoin};
use crate::proxy::CutMode;
use crate::workload::native_client;

#[derive(Debug, Default, Clone)]
pub struct Faults {
    pub kill_leader: u64,
    pub kill_follower: u64,
    pub kill_all: u64,
    pub pause: u64,
    pub partition: u64,
    pub slow_disk: u64,
    /// Members removed, wiped and added back (of which the leader, as a
    /// learner then promoted, on a new peer address; removed members that
    /// had to be killed because they did not stop by themselves).
    pub member: u64,
    pub member_leader: u64,
    pub member_learner: u64,
    pub member_new_address: u64,
    pub member_killed: u64,
    /// Membership faults that could not finish (the heal completes them).
    pub member_gave_up: Vec<String>,
    /// Members that exited without being killed (crash or fail-stop).
    pub unexpected_exits: Vec<String>,
}

impl Faults {
    pub fn total(&self) -> u64 {
        self.kill_leader
            + self.kill_follower
            + self.kill_all
            + self.pause
            + self.partition
            + self.slow_disk
            + self.member
    }
    /// Processes killed with SIGKILL (crash-restart cycles).
    pub fn kills(&self) -> u64 {
        self.kill_leader + self.kill_follower + self.slow_disk + 3 * self.kill_all
    }
}

/// Index of the member that reports itself leader.
pub async fn leader(c: &Mutex<Cluster>) -> Option<usize> {
    let addrs: Vec<String> = c
        .lock()
        .await
        .members
        .iter()
        .map(|m| m.native.clone())
        .collect();
    for (i, a) in addrs.iter().enumerate() {
        let Ok(cl) = native_client(a).await else {
            continue;
        };
        let s =
            tokio::time::timeout(Duration::from_millis(500), cl.status(w::StatusRequest {})).await;
        if let Ok(Ok(s)) = s {
            if s.leader != 0 && s.leader == s.header.member_id {
                return Some(i);
            }
        }
    }
    None
}

async fn sleep_ms(rng: &mut StdRng, lo: u64, hi: u64) {
    tokio::time::sleep(Duration::from_millis(rng.random_range(lo..hi))).await;
}

/// Injects faults until `stop`, healing each before the next.
pub async fn run(cluster: Arc<Mutex<Cluster>>, seed: u64, stop: Arc<AtomicBool>) -> Faults {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut f = Faults::default();
    let mut membership_round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        sleep_ms(&mut rng, 1_000, 3_000).await;
        note_exits(&cluster, &mut f).await;
        let lead = leader(&cluster).await;
        let any = rng.random_range(0..MEMBERS);
        let follower = lead.map_or(any, |l| {
            (l + 1 + rng.random_range(0..MEMBERS - 1)) % MEMBERS
        });
        let kind = rng.random_range(0..8);
        match kind {
            0 | 1 => {
                let (victim, leader_hit) = match (kind, lead) {
                    (0, Some(l)) => (l, true),
                    _ => (follower, false),
                };
                cluster.lock().await.kill(victim);
                if leader_hit {
                    f.kill_leader += 1;
                } else {
                    f.kill_follower += 1;
                }
                sleep_ms(&mut rng, 200, 1_500).await;
                let _ = cluster.lock().await.start(victim, None);
            }
            2 => {
                for i in 0..MEMBERS {
                    cluster.lock().await.kill(i);
                }
                f.kill_all += 1;
                sleep_ms(&mut rng, 100, 1_000).await;
                for i in 0..MEMBERS {
                    let _ = cluster.lock().await.start(i, None);
                }
            }
            3 => {
                let victim = if rng.random_bool(0.5) {
                    lead.unwrap_or(any)
                } else {
                    follower
                };
                cluster.lock().await.pause(victim);
                f.pause += 1;
                sleep_ms(&mut rng, 500, 3_000).await;
                cluster.lock().await.resume(victim);
            }
            4 => {
                cluster.lock().await.kill(follower);
                let _ = cluster
                    .lock()
                    .await
                    .start(follower, Some("wal-fsync=delay(40)"));
                f.slow_disk += 1;
                sleep_ms(&mut rng, 2_000, 5_000).await;
                let mut c = cluster.lock().await;
                c.kill(follower);
                let _ = c.start(follower, None);
            }
            7 => {
                let on_leader = lead.is_some() && rng.random_bool(1.0 / 3.0);
                let victim = if on_leader {
                    lead.unwrap_or(any)
                } else {
                    follower
                };
                // Every combination of learner/voter and old/new address.
                let how = Rejoin {
                    learner: membership_round % 2 == 1,
                    new_address: membership_round / 2 % 2 == 1,
                };
                membership_round += 1;
                match membership::remove_and_readd(&cluster, victim, how).await {
                    Ok(stopped) => {
                        f.member += 1;
                        f.member_leader += u64::from(on_leader);
                        f.member_learner += u64::from(how.learner);
                        f.member_new_address += u64::from(how.new_address);
                        f.member_killed += u64::from(!stopped);
                    }
                    Err(e) => {
                        eprintln!("chaos: membership fault on m{victim} gave up: {e:#}");
                        f.member_gave_up.push(format!("m{victim}: {e:#}"));
                    }
                }
            }
            _ => {
                let c = cluster.lock().await;
                let l = lead.unwrap_or(any);
                let mode = if rng.random_bool(0.5) {
                    CutMode::Blackhole
                } else {
                    CutMode::Drop
                };
                let cut = if kind == 5 {
                    // Leader isolated (or one member, without a leader).
                    (0..MEMBERS)
                        .filter(|&j| j != l)
                        .try_for_each(|j| c.cut(l, j, mode))
                } else {
                    // Bridge: the two others cannot see each other.
                    let (a, b) = ((l + 1) % MEMBERS, (l + 2) % MEMBERS);
                    c.cut(a, b, mode)
                };
                drop(c);
                if let Err(e) = cut {
                    eprintln!("chaos: partition failed: {e}");
                }
                f.partition += 1;
                sleep_ms(&mut rng, 1_000, 4_000).await;
                cluster.lock().await.heal();
            }
        }
    }
    note_exits(&cluster, &mut f).await;
    f
}

async fn note_exits(cluster: &Mutex<Cluster>, f: &mut Faults) {
    let mut c = cluster.lock().await;
    for (i, status) in c.reap_exited() {
        eprintln!("chaos: member m{i} exited by itself: {status}");
        f.unexpected_exits.push(format!("m{i}: {status}"));
        let _ = c.start(i, None);
    }
}
