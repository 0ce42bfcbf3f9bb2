//! The lessor: which leases exist and, on the leader, when each expires.
//!
//! Sans-IO: no clock, no store, no Raft. Time comes in as `now`; what the
//! member must do (propose revokes, propose checkpoints) comes out as lists.
//!
//! Roles (as etcd's lessor):
//! - every member applies grants, revokes and checkpoints (`on_*`), so the
//!   set of leases is the same everywhere;
//! - only the *primary* (the leader) has deadlines. A non-primary lessor
//!   never expires anything: a follower's clock never revokes a lease.
//! - `promote` gives each lease `now + remaining + extend`, where remaining
//!   is the last checkpointed remaining TTL, else the full TTL, and `extend`
//!   is an election timeout: no lease expires because the cluster had no
//!   leader for a while.
//!
//! Invariants: `primary == false` implies every `deadline` is `None`; each
//! lease with a deadline has at least one `expiries` heap entry at or before
//! its deadline (heap entries that no longer match are skipped lazily).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// Settings of the lessor (all bounded, all named).
#[derive(Clone, Debug)]
pub struct LessorConfig {
    /// Grants below this TTL get this TTL (seconds), as etcd's
    /// `minLeaseTTL` = ceil(1.5 x election timeout).
    pub min_ttl_s: i64,
    /// Most lease revokes proposed per second by expiry (etcd: 1000).
    pub revokes_per_sec: u32,
    /// A proposed expiry revoke that did not apply is proposed again after
    /// this (etcd: 3 s).
    pub expired_retry: Duration,
    /// Remaining TTLs are checkpointed through Raft every this long per lease
    /// (etcd: 5 min); `None` disables checkpoints.
    pub checkpoint_interval: Option<Duration>,
    /// Most lease checkpoints proposed per second (etcd: 1000).
    pub checkpoints_per_sec: u32,
    /// Most leases in one checkpoint entry (etcd: 1000).
    pub checkpoint_batch: usize,
}

impl Default for LessorConfig {
    fn default() -> Self {
        LessorConfig {
            min_ttl_s: 2,
            revokes_per_sec: 1000,
            expired_retry: Duration::from_secs(3),
            checkpoint_interval: Some(Duration::from_secs(300)),
            checkpoints_per_sec: 1000,
            checkpoint_batch: 1000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Lease {
    /// Granted TTL, seconds.
    ttl: i64,
    /// Last checkpointed remaining TTL, seconds (0: none).
    remaining_ttl: i64,
    /// Primary only: when the lease expires.
    deadline: Option<Instant>,
    /// Primary only: its expiry revoke was proposed; proposed again at
    /// this time if the lease still exists then.
    retry_at: Option<Instant>,
}

impl Lease {
    /// Seconds left when the clock (re)starts: the last checkpointed
    /// remaining TTL, else the granted TTL.
    fn left(&self) -> i64 {
        if self.remaining_ttl > 0 {
            self.remaining_ttl
        } else {
            self.ttl
        }
    }
}

/// Answer of [`Lessor::renew`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewed {
    /// Renewed; the granted TTL (what etcd's keep-alive answers).
    Ttl(i64),
    /// Renewed, but the lease carries a checkpointed remaining TTL that the
    /// caller clears through Raft (proposes a checkpoint of 0), or a new
    /// leader or a restart would bring back the old, shorter remaining TTL.
    ClearCheckpoint(i64),
    /// No such lease, or it has expired (its revoke is on its way).
    NotFound,
    /// This member is not the leader.
    NotPrimary,
}

/// Token bucket: at most `per_sec` a second, at most one second's worth
/// saved up.
#[derive(Clone, Debug)]
struct Rate {
    per_sec: u32,
    tokens: f64,
    last: Option<Instant>,
}

impl Rate {
    fn new(per_sec: u32) -> Rate {
        Rate {
            per_sec,
            tokens: f64::from(per_sec),
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) -> usize {
        if let Some(last) = self.last {
            let gained =
                now.saturating_duration_since(last).as_secs_f64() * f64::from(self.per_sec);
            self.tokens = (self.tokens + gained).min(f64::from(self.per_sec));
        }
        self.last = Some(now);
        self.tokens as usize
    }

    fn take(&mut self, n: usize) {
        self.tokens = (self.tokens - n as f64).max(0.0);
    }
}

pub struct Lessor {
    cfg: LessorConfig,
    leases: HashMap<i64, Lease>,
    primary: bool,
    /// Min-heap of (deadline, id); stale entries are skipped.
    expiries: BinaryHeap<Reverse<(Instant, i64)>>,
    /// Min-heap of (checkpoint due, id), primary only.
    checkpoints: BinaryHeap<Reverse<(Instant, i64)>>,
    revoke_rate: Rate,
    checkpoint_rate: Rate,
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn ttl_duration(ttl_s: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl_s).unwrap_or(0))
}

impl Lessor {
    pub fn new(cfg: LessorConfig) -> Lessor {
        let (revokes, checkpoints) = (cfg.revokes_per_sec, cfg.checkpoints_per_sec);
        Lessor {
            cfg,
            leases: HashMap::new(),
            primary: false,
            expiries: BinaryHeap::new(),
            checkpoints: BinaryHeap::new(),
            revoke_rate: Rate::new(revokes),
            checkpoint_rate: Rate::new(checkpoints),
        }
    }

    /// Replaces every lease (start-up, or a snapshot image installed):
    /// `(id, ttl, remaining_ttl)` from the store. Demotes.
    pub fn load(&mut self, leases: impl IntoIterator<Item = (i64, i64, i64)>) {
        self.demote();
        self.leases = leases
            .into_iter()
            .map(|(id, ttl, remaining_ttl)| {
                let lease = Lease {
                    ttl,
                    remaining_ttl,
                    deadline: None,
                    retry_at: None,
                };
                (id, lease)
            })
            .collect();
    }

    pub fn is_primary(&self) -> bool {
        self.primary
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// The TTL a grant of `ttl` seconds gets (raised to the minimum).
    pub fn effective_ttl(&self, ttl: i64) -> i64 {
        ttl.max(self.cfg.min_ttl_s)
    }

    /// A server-chosen id for the grant applied at Raft index `index`:
    /// a function of the index and of the leases that exist (the same on
    /// every member), positive, never 0 and never taken.
    pub fn choose_id(&self, index: u64) -> i64 {
        // splitmix64 of the index: ids look random (like etcd's) and differ
        // between neighbouring indexes.
        let mut z = index.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let mut id = (z & (i64::MAX as u64)) as i64;
        while id == 0 || self.leases.contains_key(&id) {
            id = id.wrapping_add(1) & i64::MAX;
        }
        id
    }

    /// A grant was applied.
    pub fn on_grant(&mut self, id: i64, ttl: i64, now: Instant) {
        self.leases.insert(
            id,
            Lease {
                ttl,
                remaining_ttl: 0,
                deadline: None,
                retry_at: None,
            },
        );
        if self.primary {
            self.refresh(id, now, Duration::ZERO);
        }
    }

    /// A revoke was applied.
    pub fn on_revoke(&mut self, id: i64) {
        self.leases.remove(&id);
    }

    /// A checkpoint was applied (every member keeps it, so a new leader and
    /// a restarted member start from it).
    pub fn on_checkpoint(&mut self, id: i64, remaining_ttl: i64, now: Instant) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.remaining_ttl = remaining_ttl;
            if self.primary {
                self.schedule_checkpoint(id, now);
            }
        }
    }

    /// Became leader: every lease gets `now + remaining + extend`, then
    /// leases piled up in one second are spread (`spread_expiries`).
    pub fn promote(&mut self, now: Instant, extend: Duration) {
        self.primary = true;
        self.expiries.clear();
        self.checkpoints.clear();
        for l in self.leases.values_mut() {
            l.deadline = Some(now + ttl_duration(l.left()) + extend);
            l.retry_at = None;
        }
        self.spread_expiries(now);
        let ids: Vec<i64> = self.leases.keys().copied().collect();
        for id in ids {
            if let Some(deadline) = self.leases.get(&id).and_then(|l| l.deadline) {
                self.expiries.push(Reverse((deadline, id)));
            }
            self.schedule_checkpoint(id, now);
        }
    }

    /// etcd's `Promote` pile-up adjustment: with at least `revokes_per_sec`
    /// leases, walking them by deadline, no one-second window keeps more
    /// than 3/4 of the revoke rate; the n-th lease past that in a window is
    /// pushed to `window start + n / (3/4 rate)` seconds. A new leader (all
    /// leases restarted from the same checkpoint, or granted together)
    /// then expires them at 3/4 of the revoke rate instead of in one burst
    /// that would take the whole revoke budget for seconds. Deterministic:
    /// ties in deadline are broken by lease id.
    fn spread_expiries(&mut self, now: Instant) {
        let rate = self.cfg.revokes_per_sec as usize;
        if self.leases.len() < rate || self.leases.is_empty() {
            return; // no possibility of a pile-up
        }
        let target = (3 * rate / 4).max(1) as f64;
        let mut order: Vec<(Instant, i64)> = self
            .leases
            .iter()
            .filter_map(|(id, l)| l.deadline.map(|d| (d, *id)))
            .collect();
        order.sort_unstable();
        // Seconds from `now`, as etcd's `Remaining()`.
        let rem = |d: Instant| d.saturating_duration_since(now).as_secs_f64();
        let mut base = rem(order[0].0);
        let mut next = base + 1.0;
        let mut expires = 0usize;
        for (deadline, id) in order {
            let remaining = rem(deadline);
            if remaining > next {
                base = remaining;
                next = base + 1.0;
                expires = 1;
                continue;
            }
            expires += 1;
            if expires as f64 <= target {
                continue;
            }
            // A lease n seconds ahead of the window start moves n seconds
            // less.
            let delay = expires as f64 / target - (remaining - base);
            next = base + delay;
            if let Some(l) = self.leases.get_mut(&id) {
                let moved = Duration::from_secs_f64(delay.abs());
                l.deadline = Some(if delay >= 0.0 {
                    deadline + moved
                } else {
                    deadline.checked_sub(moved).unwrap_or(deadline)
                });
            }
        }
    }

    /// Lost leadership: no deadlines any more.
    pub fn demote(&mut self) {
        self.primary = false;
        for l in self.leases.values_mut() {
            l.deadline = None;
            l.retry_at = None;
        }
        self.expiries.clear();
        self.checkpoints.clear();
    }

    fn refresh(&mut self, id: i64, now: Instant, extend: Duration) {
        let Some(l) = self.leases.get_mut(&id) else {
            return;
        };
        let deadline = now + ttl_duration(l.left()) + extend;
        l.deadline = Some(deadline);
        l.retry_at = None;
        self.expiries.push(Reverse((deadline, id)));
        self.schedule_checkpoint(id, now);
    }

    /// etcd's scheduleCheckpointIfNeeded: only leases that outlive one
    /// checkpoint interval need a checkpoint.
    fn schedule_checkpoint(&mut self, id: i64, now: Instant) {
        let (Some(interval), Some(l)) = (self.cfg.checkpoint_interval, self.leases.get(&id)) else {
            return;
        };
        if let Some(deadline) = l.deadline
            && deadline.saturating_duration_since(now) > interval
        {
            self.checkpoints.push(Reverse((now + interval, id)));
        }
    }

    /// Keep-alive on the leader.
    pub fn renew(&mut self, id: i64, now: Instant) -> Renewed {
        if !self.primary {
            return Renewed::NotPrimary;
        }
        let Some(l) = self.leases.get(&id) else {
            return Renewed::NotFound;
        };
        if l.deadline.is_some_and(|d| d <= now) {
            return Renewed::NotFound;
        }
        let (ttl, had_checkpoint) = (l.ttl, l.remaining_ttl > 0);
        if let Some(l) = self.leases.get_mut(&id) {
            l.remaining_ttl = 0;
        }
        self.refresh(id, now, Duration::ZERO);
        if had_checkpoint && self.cfg.checkpoint_interval.is_some() {
            Renewed::ClearCheckpoint(ttl)
        } else {
            Renewed::Ttl(ttl)
        }
    }

    /// `(remaining seconds, granted ttl)`; remaining is measured on the
    /// leader, and is the granted TTL elsewhere (a follower has no clock
    /// for leases). `None`: no such lease.
    pub fn time_to_live(&self, id: i64, now: Instant) -> Option<(i64, i64)> {
        let l = self.leases.get(&id)?;
        let remaining = match l.deadline {
            Some(d) => secs(d.saturating_duration_since(now)),
            None if l.remaining_ttl > 0 => l.remaining_ttl,
            None => l.ttl,
        };
        Some((remaining, l.ttl))
    }

    /// Leases whose deadline passed, at most the revoke rate allows; each
    /// one returned is retried after `expired_retry` if its revoke never
    /// applies (a leader change lost it).
    pub fn expired(&mut self, now: Instant) -> Vec<i64> {
        if !self.primary {
            return Vec::new();
        }
        let budget = self.revoke_rate.refill(now);
        let mut out = Vec::new();
        while out.len() < budget {
            let Some(Reverse((at, _))) = self.expiries.peek().copied() else {
                break;
            };
            if at > now {
                break;
            }
            let Some(Reverse((_, id))) = self.expiries.pop() else {
                break;
            };
            let Some(l) = self.leases.get_mut(&id) else {
                continue;
            };
            // Renewed since (a later heap entry stands for it), or its
            // revoke is already proposed and not yet due for a retry.
            let live = l.deadline.is_none_or(|d| d > now);
            if live || l.retry_at.is_some_and(|r| r > now) {
                continue;
            }
            let retry = now + self.cfg.expired_retry;
            l.retry_at = Some(retry);
            self.expiries.push(Reverse((retry, id)));
            out.push(id);
        }
        self.revoke_rate.take(out.len());
        out
    }

    /// Checkpoints that are due, `(id, remaining seconds)`, in batches of at
    /// most `checkpoint_batch`, at most the checkpoint rate allows.
    pub fn due_checkpoints(&mut self, now: Instant) -> Vec<Vec<(i64, i64)>> {
        if !self.primary || self.cfg.checkpoint_interval.is_none() {
            return Vec::new();
        }
        let budget = self.checkpoint_rate.refill(now);
        let mut taken = 0;
        let mut batches: Vec<Vec<(i64, i64)>> = Vec::new();
        while taken < budget {
            let Some(Reverse((due, id))) = self.checkpoints.peek().copied() else {
                break;
            };
            if due > now {
                break;
            }
            self.checkpoints.pop();
            let Some(deadline) = self.leases.get(&id).and_then(|l| l.deadline) else {
                continue;
            };
            if deadline <= now {
                continue; // expiring: the revoke settles it
            }
            // Round up: a checkpoint never shortens a lease.
            let left = deadline.saturating_duration_since(now);
            let remaining = secs(left) + i64::from(left.subsec_nanos() > 0);
            match batches.last_mut() {
                Some(b) if b.len() < self.cfg.checkpoint_batch => b.push((id, remaining)),
                _ => batches.push(vec![(id, remaining)]),
            }
            taken += 1;
        }
        self.checkpoint_rate.take(taken);
        batches
    }

    /// Every lease id (any order).
    pub fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.leases.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lessor() -> Lessor {
        Lessor::new(LessorConfig::default())
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn follower_never_expires() {
        let mut l = lessor();
        let t0 = Instant::now();
        l.on_grant(1, 5, t0);
        assert!(l.expired(t0 + 100 * S).is_empty());
        assert_eq!(l.renew(1, t0), Renewed::NotPrimary);
        assert_eq!(l.time_to_live(1, t0), Some((5, 5)));
    }

    #[test]
    fn leader_expires_after_ttl_and_renew_pushes_back() {
        let mut l = lessor();
        let t0 = Instant::now();
        l.promote(t0, Duration::ZERO);
        l.on_grant(1, 5, t0);
        assert!(l.expired(t0 + 4 * S).is_empty());
        assert_eq!(l.renew(1, t0 + 4 * S), Renewed::Ttl(5));
        assert!(l.expired(t0 + 8 * S).is_empty());
        assert_eq!(l.time_to_live(1, t0 + 8 * S), Some((1, 5)));
        assert_eq!(l.expired(t0 + 9 * S), vec![1]);
        // Expiring: keep-alive says not found; retried after 3 s if the
        // revoke did not apply.
        assert_eq!(l.renew(1, t0 + 9 * S), Renewed::NotFound);
        assert!(l.expired(t0 + 10 * S).is_empty());
        assert_eq!(l.expired(t0 + 12 * S), vec![1]);
        l.on_revoke(1);
        assert!(l.expired(t0 + 20 * S).is_empty());
        assert_eq!(l.renew(1, t0 + 20 * S), Renewed::NotFound);
    }

    #[test]
    fn promotion_uses_checkpoint_plus_extension() {
        let mut l = lessor();
        let t0 = Instant::now();
        l.load([(1, 60, 0), (2, 60, 10)]);
        l.promote(t0, S);
        assert_eq!(l.time_to_live(1, t0), Some((61, 60)));
        assert_eq!(l.time_to_live(2, t0), Some((11, 60)));
        assert!(l.expired(t0 + 10 * S).is_empty());
        assert_eq!(l.expired(t0 + 11 * S), vec![2]);
        l.demote();
        assert!(l.expired(t0 + 100 * S).is_empty());
    }

    /// Deadlines of every lease, seconds after `t0`, sorted.
    fn deadlines(l: &Lessor, t0: Instant) -> Vec<f64> {
        let mut d: Vec<f64> = l
            .leases
            .values()
            .map(|x| x.deadline.unwrap().duration_since(t0).as_secs_f64())
            .collect();
        d.sort_by(f64::total_cmp);
        d
    }

    #[test]
    fn promotion_spreads_a_pile_up_at_three_quarters_of_the_revoke_rate() {
        // 2000 leases restarting from the same checkpoint (60 s), revoke
        // rate 1000/s: etcd keeps 750 in the first second and moves the
        // n-th after them to +n/750 s.
        let mut l = lessor();
        let t0 = Instant::now();
        l.load((1..=2000).map(|id| (id, 600, 60)));
        l.promote(t0, S);
        let d = deadlines(&l, t0);
        let base = 61.0;
        assert!(d.iter().all(|&x| x >= base - 1e-6), "none earlier");
        let in_window = |from: f64| d.iter().filter(|&&x| x >= from && x < from + 1.0).count();
        assert_eq!(in_window(base), 750);
        for second in 1..3 {
            assert!(
                in_window(base + f64::from(second)) <= 751,
                "second {second}"
            );
        }
        let last = d.last().unwrap() - base;
        assert!((last - 2000.0 / 750.0).abs() < 1e-3, "last at +{last}");
        // Expiry then follows the spread: at most 750 in the first second.
        assert_eq!(
            l.expired(t0 + Duration::from_secs_f64(base + 0.999)).len(),
            750
        );

        // Fewer leases than the revoke rate: no pile-up is possible, no
        // lease moves (etcd).
        let mut few = lessor();
        few.load((1..=999).map(|id| (id, 600, 60)));
        few.promote(t0, S);
        assert!(deadlines(&few, t0).iter().all(|&x| (x - 61.0).abs() < 1e-6));
    }

    #[test]
    fn spreading_moves_leases_ahead_of_the_window_by_less() {
        // 1000 leases at +10 s and 1000 at +10.5 s (rate 1000/s, target
        // 750): the later ones are already half a second out, so each moves
        // half a second less than it would from +10 s.
        let mut l = lessor();
        let t0 = Instant::now();
        l.load((1..=2000).map(|id| (id, 600, 10)));
        l.promote(t0, Duration::ZERO);
        for (id, lease) in l.leases.iter_mut() {
            if *id > 1000 {
                lease.deadline = Some(t0 + Duration::from_millis(10_500));
            }
        }
        l.spread_expiries(t0);
        let d = deadlines(&l, t0);
        let last = d.last().unwrap() - 10.0;
        assert!((last - 2000.0 / 750.0).abs() < 1e-3, "last at +{last}");
        assert_eq!(d.iter().filter(|&&x| x < 11.0).count(), 750);
    }

    #[test]
    fn renew_of_checkpointed_lease_clears_it() {
        let mut l = lessor();
        let t0 = Instant::now();
        l.load([(1, 600, 100)]);
        l.promote(t0, Duration::ZERO);
        assert_eq!(l.renew(1, t0), Renewed::ClearCheckpoint(600));
        assert_eq!(l.renew(1, t0), Renewed::Ttl(600));
    }

    #[test]
    fn revokes_are_rate_bounded() {
        let mut l = Lessor::new(LessorConfig {
            revokes_per_sec: 100,
            ..LessorConfig::default()
        });
        let t0 = Instant::now();
        l.promote(t0, Duration::ZERO);
        for id in 1..=1000 {
            l.on_grant(id, 2, t0);
        }
        let t = t0 + 3 * S;
        assert_eq!(l.expired(t).len(), 100);
        assert!(l.expired(t).is_empty());
        assert_eq!(l.expired(t + Duration::from_millis(500)).len(), 50);
    }

    #[test]
    fn checkpoints_come_due_in_bounded_batches() {
        let mut l = Lessor::new(LessorConfig {
            checkpoint_interval: Some(10 * S),
            checkpoint_batch: 3,
            ..LessorConfig::default()
        });
        let t0 = Instant::now();
        l.promote(t0, Duration::ZERO);
        for id in 1..=7 {
            l.on_grant(id, 60, t0);
        }
        l.on_grant(8, 5, t0); // shorter than the interval: never checkpointed
        assert!(l.due_checkpoints(t0 + 9 * S).is_empty());
        let batches = l.due_checkpoints(t0 + 10 * S);
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![3, 3, 1]
        );
        assert!(batches.iter().flatten().all(|&(_, r)| r == 50));
    }

    #[test]
    fn chosen_ids_are_positive_and_free() {
        let mut l = lessor();
        let t0 = Instant::now();
        let a = l.choose_id(7);
        assert!(a > 0);
        l.on_grant(a, 10, t0);
        let b = l.choose_id(7);
        assert_ne!(a, b);
        assert!(b > 0);
        assert_ne!(l.choose_id(8), a);
    }
}
