//! A user's merged key permissions and etcd's range-permission checks
//! (`auth/range_perm_cache.go`), as pure functions.
//!
//! etcd inserts every permission of every role of the user into one
//! interval tree for reads and one for writes, then asks:
//! * a single key (`range_end` empty): does any interval contain it;
//! * a range `[key, range_end)` (`range_end == [0]`: every key from `key`):
//!   do the intervals that overlap it cover it without a gap.
//!
//! Here the intervals are merged once (sorted, touching ones joined) when the
//! auth state changes, and a check is a binary search.
//!
//! A permission `{key, range_end}`: `range_end` empty is the point
//! `[key, key\0)`; `range_end == [0]` is `[key, +inf)`; otherwise
//! `[key, range_end)`.

use super::state::{AuthState, PermType};

/// End of an interval; `None` is +infinity.
type End = Option<Vec<u8>>;

/// Disjoint, sorted, non-touching intervals `[begin, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intervals(Vec<(Vec<u8>, End)>);

fn end_lt(a: &End, b: &End) -> bool {
    match (a, b) {
        (_, None) => a.is_some(),
        (None, Some(_)) => false,
        (Some(a), Some(b)) => a < b,
    }
}

fn point_end(key: &[u8]) -> Vec<u8> {
    let mut e = key.to_vec();
    e.push(0);
    e
}

impl Intervals {
    /// Merges arbitrary intervals. Empty or inverted ones are dropped.
    pub fn merge(mut ivs: Vec<(Vec<u8>, End)>) -> Intervals {
        ivs.retain(|(b, e)| e.as_ref().is_none_or(|e| b < e));
        ivs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Vec<u8>, End)> = Vec::with_capacity(ivs.len());
        for (b, e) in ivs {
            match out.last_mut() {
                // Touching or overlapping (last.end >= b): extend.
                Some(last) if !end_lt(&last.1, &Some(b.clone())) => {
                    if end_lt(&last.1, &e) {
                        last.1 = e;
                    }
                }
                _ => out.push((b, e)),
            }
        }
        Intervals(out)
    }

    /// The merged interval whose begin is the greatest one <= `key`.
    fn floor(&self, key: &[u8]) -> Option<&(Vec<u8>, End)> {
        let at = self.0.partition_point(|(b, _)| b.as_slice() <= key);
        at.checked_sub(1).map(|i| &self.0[i])
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.floor(key)
            .is_some_and(|(_, e)| e.as_ref().is_none_or(|e| key < e.as_slice()))
    }

    /// Whether `[key, range_end)` is covered (`range_end == [0]`: to +inf).
    /// Merged intervals have gaps between them, so the range is covered iff
    /// one interval covers it.
    pub fn contains_range(&self, key: &[u8], range_end: &[u8]) -> bool {
        let want: End = if range_end == [0] {
            None
        } else {
            Some(range_end.to_vec())
        };
        if want.as_ref().is_some_and(|e| e.as_slice() <= key) {
            // etcd's interval tree finds nothing overlapping an empty range.
            return false;
        }
        self.floor(key).is_some_and(|(_, e)| !end_lt(e, &want))
    }
}

/// One user's permissions, merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPerms {
    /// Holds the root role: every key, and admin calls.
    pub root: bool,
    pub read: Intervals,
    pub write: Intervals,
}

/// Which access a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl UserPerms {
    /// Merges the permissions of every role the user holds (roles that no
    /// longer exist are skipped, as etcd does).
    pub fn of(state: &AuthState, user: &str) -> Option<UserPerms> {
        let u = state.users.get(user)?;
        let (mut read, mut write) = (Vec::new(), Vec::new());
        for role in u.roles.iter().filter_map(|r| state.roles.get(r)) {
            for p in &role.perms {
                let iv = match p.range_end.as_slice() {
                    [] => (p.key.clone(), Some(point_end(&p.key))),
                    [0] => (p.key.clone(), None),
                    end => (p.key.clone(), Some(end.to_vec())),
                };
                match p.perm_type {
                    PermType::Read => read.push(iv),
                    PermType::Write => write.push(iv),
                    PermType::ReadWrite => {
                        read.push(iv.clone());
                        write.push(iv);
                    }
                }
            }
        }
        Some(UserPerms {
            root: u.has_root_role(),
            read: Intervals::merge(read),
            write: Intervals::merge(write),
        })
    }

    /// etcd's isRangeOpPermitted: `range_end` empty checks the single key.
    pub fn permits(&self, access: Access, key: &[u8], range_end: &[u8]) -> bool {
        if self.root {
            return true;
        }
        let ivs = match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        };
        if range_end.is_empty() {
            ivs.contains_key(key)
        } else {
            ivs.contains_range(key, range_end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::{Change, Perm};
    use super::*;

    fn user_with(perms: &[(PermType, &[u8], &[u8])]) -> UserPerms {
        let mut s = AuthState::default();
        s.apply(&Change::UserAdd {
            name: "u",
            hash: "",
            no_password: true,
        })
        .unwrap();
        for (i, (t, k, e)) in perms.iter().enumerate() {
            // One role per permission, to exercise merging across roles.
            let role = format!("r{i}");
            s.apply(&Change::RoleAdd(&role)).unwrap();
            let perm = Perm {
                perm_type: *t,
                key: k.to_vec(),
                range_end: e.to_vec(),
            };
            s.apply(&Change::RoleGrantPermission { role: &role, perm })
                .unwrap();
            s.apply(&Change::UserGrantRole {
                user: "u",
                role: &role,
            })
            .unwrap();
        }
        UserPerms::of(&s, "u").unwrap()
    }

    #[test]
    fn single_key_permission_is_a_point() {
        let p = user_with(&[(PermType::Read, b"/b", b"")]);
        assert!(p.permits(Access::Read, b"/b", b""));
        assert!(!p.permits(Access::Read, b"/b0", b""));
        assert!(!p.permits(Access::Write, b"/b", b""));
        // The point covers exactly [/b, /b\0).
        assert!(p.permits(Access::Read, b"/b", b"/b\0"));
        assert!(!p.permits(Access::Read, b"/b", b"/c"));
    }

    #[test]
    fn prefix_covers_subranges_not_beyond() {
        let p = user_with(&[(PermType::ReadWrite, b"/a/", b"/a0")]);
        assert!(p.permits(Access::Write, b"/a/x", b""));
        assert!(p.permits(Access::Read, b"/a/x", b"/a/y"));
        assert!(p.permits(Access::Read, b"/a/", b"/a0"));
        assert!(!p.permits(Access::Read, b"/a/", b"/a1"));
        assert!(!p.permits(Access::Read, b"/a", b"/a0"));
        assert!(!p.permits(Access::Read, b"/a/", b"\0"));
        assert!(!p.permits(Access::Read, b"/b", b""));
    }

    #[test]
    fn touching_ranges_from_different_roles_merge() {
        let p = user_with(&[
            (PermType::Read, b"a", b"c"),
            (PermType::ReadWrite, b"c", b"e"),
            (PermType::Read, b"x", b""),
        ]);
        assert!(p.permits(Access::Read, b"a", b"e"));
        assert!(p.permits(Access::Read, b"b", b"d"));
        assert!(!p.permits(Access::Write, b"b", b"d"));
        assert!(p.permits(Access::Write, b"c", b"e"));
        assert!(!p.permits(Access::Read, b"a", b"f"));
        // A gap between [a, e) and the point x.
        assert!(!p.permits(Access::Read, b"a", b"y"));
    }

    #[test]
    fn open_ended_permission_and_requests() {
        let p = user_with(&[(PermType::Read, b"k", b"\0")]);
        assert!(p.permits(Access::Read, b"k", b"\0"));
        assert!(p.permits(Access::Read, b"zzz", b"\0"));
        assert!(p.permits(Access::Read, b"zzz", b""));
        assert!(!p.permits(Access::Read, b"a", b"\0"));
        let all = user_with(&[(PermType::Read, b"\0", b"\0")]);
        assert!(all.permits(Access::Read, b"\0", b"\0"));
        assert!(!all.permits(Access::Read, b"", b""));
    }

    #[test]
    fn empty_or_inverted_request_ranges_are_denied() {
        let p = user_with(&[(PermType::Read, b"a", b"z")]);
        assert!(!p.permits(Access::Read, b"m", b"m"));
        assert!(!p.permits(Access::Read, b"m", b"c"));
    }

    #[test]
    fn no_roles_no_access_root_everything() {
        let p = user_with(&[]);
        assert!(!p.permits(Access::Read, b"a", b""));
        let root = UserPerms {
            root: true,
            ..Default::default()
        };
        assert!(root.permits(Access::Write, b"\0", b"\0"));
    }

    /// The merged check against etcd's definition, on random small cases:
    /// a range is covered iff every key in it is in some permission.
    #[test]
    fn matches_a_naive_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let key = |rng: &mut rand::rngs::StdRng| vec![b'a' + rng.random_range(0..6u8)];
        for _ in 0..500 {
            let n = rng.random_range(0..4);
            let perms: Vec<(PermType, Vec<u8>, Vec<u8>)> = (0..n)
                .map(|_| {
                    let k = key(&mut rng);
                    let e = match rng.random_range(0..3) {
                        0 => Vec::new(),
                        1 => vec![0],
                        _ => key(&mut rng),
                    };
                    (PermType::Read, k, e)
                })
                .collect();
            let refs: Vec<(PermType, &[u8], &[u8])> = perms
                .iter()
                .map(|(t, k, e)| (*t, k.as_slice(), e.as_slice()))
                .collect();
            let p = user_with(&refs);
            // Keys of this test are one letter in a..=f, or that letter + \0.
            let universe: Vec<Vec<u8>> =
                (b'a'..=b'g').flat_map(|c| [vec![c], vec![c, 0]]).collect();
            let in_perm = |k: &[u8]| {
                perms.iter().any(|(_, b, e)| match e.as_slice() {
                    [] => k == b.as_slice(),
                    [0] => k >= b.as_slice(),
                    e => k >= b.as_slice() && k < e,
                })
            };
            let (b, e) = (key(&mut rng), key(&mut rng));
            if b < e {
                let naive = universe
                    .iter()
                    .filter(|k| k.as_slice() >= b.as_slice() && k.as_slice() < e.as_slice())
                    .all(|k| in_perm(k));
                assert_eq!(
                    p.permits(Access::Read, &b, &e),
                    naive,
                    "{perms:?} [{b:?},{e:?})"
                );
            }
            assert_eq!(
                p.permits(Access::Read, &b, b""),
                in_perm(&b),
                "{perms:?} {b:?}"
            );
        }
    }
}
