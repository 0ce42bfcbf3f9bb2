//! The auth state (enabled flag, revision, users, roles) and etcd 3.4's rules
//! for changing it (`auth/store.go`). Pure: no IO, clock, randomness or
//! hashing; passwords arrive already hashed, so every member applying the
//! same entry reaches the same state.
//!
//! Invariants: `revision` grows by one on every change that succeeds (etcd's
//! `commitRevision`), except AuthEnable, which like etcd keeps it; a user's
//! `roles` are sorted and distinct; a role's `perms` are sorted by key.

use std::collections::BTreeMap;

use corekv_wire::ApiError;
use corekv_wire::messages as w;
use serde::{Deserialize, Serialize};

pub const ROOT_USER: &str = "root";
pub const ROOT_ROLE: &str = "root";
/// Format version of the persisted state (`AuthState::version`).
pub const AUTH_STATE_VERSION: u8 = 1;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermType {
    Read,
    Write,
    ReadWrite,
}

impl PermType {
    pub fn from_wire(t: &w::ArchivedPermissionType) -> PermType {
        match t {
            w::ArchivedPermissionType::Read => PermType::Read,
            w::ArchivedPermissionType::Write => PermType::Write,
            w::ArchivedPermissionType::ReadWrite => PermType::ReadWrite,
        }
    }

    pub fn to_wire(self) -> w::PermissionType {
        match self {
            PermType::Read => w::PermissionType::Read,
            PermType::Write => w::PermissionType::Write,
            PermType::ReadWrite => w::PermissionType::ReadWrite,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Perm {
    pub perm_type: PermType,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    /// bcrypt hash; empty for a `no_password` user.
    pub password_hash: String,
    pub no_password: bool,
    pub roles: Vec<String>,
}

impl User {
    pub fn has_root_role(&self) -> bool {
        self.roles.iter().any(|r| r == ROOT_ROLE)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Role {
    pub perms: Vec<Perm>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AuthState {
    pub version: u8,
    pub enabled: bool,
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState {
            version: AUTH_STATE_VERSION,
            enabled: false,
            revision: 0,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

/// What a successful change means for issued tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TokenEffect {
    #[default]
    None,
    /// Drop every token of this user (deleted, or password changed).
    DropUser(String),
    /// Drop every token (auth disabled).
    DropAll,
}

/// A mutation of the auth state, with passwords already hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    Enable,
    Disable,
    UserAdd {
        name: &'a str,
        hash: &'a str,
        no_password: bool,
    },
    UserDelete(&'a str),
    UserChangePassword {
        name: &'a str,
        hash: &'a str,
    },
    UserGrantRole {
        user: &'a str,
        role: &'a str,
    },
    UserRevokeRole {
        user: &'a str,
        role: &'a str,
    },
    RoleAdd(&'a str),
    RoleDelete(&'a str),
    RoleGrantPermission {
        role: &'a str,
        perm: Perm,
    },
    RoleRevokePermission {
        role: &'a str,
        key: &'a [u8],
        range_end: &'a [u8],
    },
}

impl AuthState {
    /// Applies one change with etcd's checks and error kinds. On error the
    /// state is unchanged.
    pub fn apply(&mut self, change: &Change<'_>) -> Result<TokenEffect, ApiError> {
        let effect = match *change {
            Change::Enable => {
                if self.enabled {
                    return Ok(TokenEffect::None);
                }
                let root = self
                    .users
                    .get(ROOT_USER)
                    .ok_or(ApiError::RootUserNotExist)?;
                if !root.has_root_role() {
                    return Err(ApiError::RootRoleNotExist);
                }
                self.enabled = true;
                // etcd keeps the revision on enable.
                return Ok(TokenEffect::None);
            }
            Change::Disable => {
                if !self.enabled {
                    return Ok(TokenEffect::None);
                }
                self.enabled = false;
                TokenEffect::DropAll
            }
            Change::UserAdd {
                name,
                hash,
                no_password,
            } => {
                if name.is_empty() {
                    return Err(ApiError::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(ApiError::UserAlreadyExist);
                }
                let user = User {
                    password_hash: if no_password {
                        String::new()
                    } else {
                        hash.into()
                    },
                    no_password,
                    roles: Vec::new(),
                };
                self.users.insert(name.to_owned(), user);
                TokenEffect::None
            }
            Change::UserDelete(name) => {
                if self.enabled && name == ROOT_USER {
                    return Err(ApiError::InvalidAuthMgmt);
                }
                self.users.remove(name).ok_or(ApiError::UserNotFound)?;
                TokenEffect::DropUser(name.to_owned())
            }
            Change::UserChangePassword { name, hash } => {
                let user = self.users.get_mut(name).ok_or(ApiError::UserNotFound)?;
                user.password_hash = hash.to_owned();
                TokenEffect::DropUser(name.to_owned())
            }
            Change::UserGrantRole { user, role } => {
                if !self.users.contains_key(user) {
                    return Err(ApiError::UserNotFound);
                }
                if role != ROOT_ROLE && !self.roles.contains_key(role) {
                    return Err(ApiError::RoleNotFound);
                }
                let u = self.users.get_mut(user).ok_or(ApiError::UserNotFound)?;
                match u.roles.binary_search_by(|r| r.as_str().cmp(role)) {
                    // Already granted: etcd answers success and changes nothing.
                    Ok(_) => return Ok(TokenEffect::None),
                    Err(at) => u.roles.insert(at, role.to_owned()),
                }
                TokenEffect::None
            }
            Change::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT_USER && role == ROOT_ROLE {
                    return Err(ApiError::InvalidAuthMgmt);
                }
                let u = self.users.get_mut(user).ok_or(ApiError::UserNotFound)?;
                let at = u
                    .roles
                    .iter()
                    .position(|r| r == role)
                    .ok_or(ApiError::RoleNotGranted)?;
                u.roles.remove(at);
                TokenEffect::None
            }
            Change::RoleAdd(name) => {
                if name.is_empty() {
                    return Err(ApiError::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(ApiError::RoleAlreadyExist);
                }
                self.roles.insert(name.to_owned(), Role::default());
                TokenEffect::None
            }
            Change::RoleDelete(name) => {
                if self.enabled && name == ROOT_ROLE {
                    return Err(ApiError::InvalidAuthMgmt);
                }
                self.roles.remove(name).ok_or(ApiError::RoleNotFound)?;
                // etcd 3.4 removes the deleted role from every user.
                for u in self.users.values_mut() {
                    u.roles.retain(|r| r != name);
                }
                TokenEffect::None
            }
            Change::RoleGrantPermission { role, ref perm } => {
                let r = self.roles.get_mut(role).ok_or(ApiError::RoleNotFound)?;
                let at = r.perms.partition_point(|p| p.key < perm.key);
                match r.perms[at..]
                    .iter_mut()
                    .take_while(|p| p.key == perm.key)
                    .find(|p| p.range_end == perm.range_end)
                {
                    Some(existing) => existing.perm_type = perm.perm_type,
                    None => r.perms.insert(at, perm.clone()),
                }
                TokenEffect::None
            }
            Change::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let r = self.roles.get_mut(role).ok_or(ApiError::RoleNotFound)?;
                let before = r.perms.len();
                r.perms
                    .retain(|p| !(p.key == key && p.range_end == range_end));
                if r.perms.len() == before {
                    return Err(ApiError::PermissionNotGranted);
                }
                TokenEffect::None
            }
        };
        self.revision += 1;
        Ok(effect)
    }

    /// etcd's UserGet: the user's roles.
    pub fn user_roles(&self, name: &str) -> Result<Vec<String>, ApiError> {
        Ok(self
            .users
            .get(name)
            .ok_or(ApiError::UserNotFound)?
            .roles
            .clone())
    }

    /// etcd's RoleGet: the role's permissions (3.4 lists none for root,
    /// whose access is implied).
    pub fn role_perms(&self, name: &str) -> Result<Vec<w::Permission>, ApiError> {
        let role = self.roles.get(name).ok_or(ApiError::RoleNotFound)?;
        let out: Vec<w::Permission> = role
            .perms
            .iter()
            .map(|p| w::Permission {
                perm_type: p.perm_type.to_wire(),
                key: p.key.clone(),
                range_end: p.range_end.clone(),
            })
            .collect();
        Ok(out)
    }

    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain maps, strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<AuthState, String> {
        let state: AuthState =
            serde_json::from_slice(bytes).map_err(|e| format!("auth state: {e}"))?;
        if state.version != AUTH_STATE_VERSION {
            return Err(format!(
                "auth state: unknown format version {} (this build reads {AUTH_STATE_VERSION})",
                state.version
            ));
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_root() -> AuthState {
        let mut s = AuthState::default();
        s.apply(&Change::UserAdd {
            name: "root",
            hash: "h",
            no_password: false,
        })
        .unwrap();
        s
    }

    #[test]
    fn enable_needs_root_user_with_root_role() {
        let mut s = AuthState::default();
        assert_eq!(s.apply(&Change::Enable), Err(ApiError::RootUserNotExist));
        let mut s = with_root();
        assert_eq!(s.apply(&Change::Enable), Err(ApiError::RootRoleNotExist));
        s.apply(&Change::UserGrantRole {
            user: "root",
            role: "root",
        })
        .unwrap();
        let rev = s.revision;
        s.apply(&Change::Enable).unwrap();
        assert!(s.enabled);
        assert_eq!(s.revision, rev, "enable keeps the revision, as etcd");
        assert_eq!(s.apply(&Change::Disable), Ok(TokenEffect::DropAll));
        assert_eq!(s.revision, rev + 1);
    }

    #[test]
    fn root_cannot_be_removed_while_enabled() {
        let mut s = with_root();
        s.apply(&Change::RoleAdd("root")).unwrap();
        s.apply(&Change::UserGrantRole {
            user: "root",
            role: "root",
        })
        .unwrap();
        s.apply(&Change::Enable).unwrap();
        let before = s.clone();
        assert_eq!(
            s.apply(&Change::UserDelete("root")),
            Err(ApiError::InvalidAuthMgmt)
        );
        assert_eq!(
            s.apply(&Change::UserRevokeRole {
                user: "root",
                role: "root"
            }),
            Err(ApiError::InvalidAuthMgmt)
        );
        assert_eq!(
            s.apply(&Change::RoleDelete("root")),
            Err(ApiError::InvalidAuthMgmt)
        );
        assert_eq!(s, before, "a refused change leaves the state alone");
    }

    #[test]
    fn users_and_roles_follow_etcd_errors() {
        let mut s = AuthState::default();
        let add = |name| Change::UserAdd {
            name,
            hash: "h",
            no_password: false,
        };
        assert_eq!(s.apply(&add("")), Err(ApiError::UserEmpty));
        s.apply(&add("u")).unwrap();
        assert_eq!(s.apply(&add("u")), Err(ApiError::UserAlreadyExist));
        assert_eq!(s.apply(&Change::RoleAdd("")), Err(ApiError::RoleEmpty));
        let grant = Change::UserGrantRole {
            user: "u",
            role: "r",
        };
        assert_eq!(s.apply(&grant), Err(ApiError::RoleNotFound));
        s.apply(&Change::RoleAdd("r")).unwrap();
        assert_eq!(
            s.apply(&Change::RoleAdd("r")),
            Err(ApiError::RoleAlreadyExist)
        );
        s.apply(&grant).unwrap();
        let rev = s.revision;
        s.apply(&grant).unwrap();
        assert_eq!(s.revision, rev, "granting a granted role changes nothing");
        assert_eq!(s.user_roles("u").unwrap(), vec!["r".to_string()]);
        s.apply(&Change::RoleDelete("r")).unwrap();
        assert!(s.user_roles("u").unwrap().is_empty());
        assert_eq!(
            s.apply(&Change::UserRevokeRole {
                user: "u",
                role: "r"
            }),
            Err(ApiError::RoleNotGranted)
        );
        assert_eq!(
            s.apply(&Change::UserDelete("nobody")),
            Err(ApiError::UserNotFound)
        );
        assert_eq!(
            s.apply(&Change::UserChangePassword {
                name: "u",
                hash: "x"
            }),
            Ok(TokenEffect::DropUser("u".into()))
        );
    }

    #[test]
    fn grant_permission_replaces_same_range_and_revoke_needs_exact_match() {
        let mut s = AuthState::default();
        s.apply(&Change::RoleAdd("r")).unwrap();
        let perm = |t, k: &[u8], e: &[u8]| Perm {
            perm_type: t,
            key: k.to_vec(),
            range_end: e.to_vec(),
        };
        for p in [
            perm(PermType::Read, b"b", b""),
            perm(PermType::Read, b"a", b"c"),
            perm(PermType::Write, b"b", b""),
        ] {
            s.apply(&Change::RoleGrantPermission { role: "r", perm: p })
                .unwrap();
        }
        let perms = &s.roles["r"].perms;
        assert_eq!(
            perms,
            &vec![
                perm(PermType::Read, b"a", b"c"),
                perm(PermType::Write, b"b", b"")
            ]
        );
        assert_eq!(
            s.apply(&Change::RoleRevokePermission {
                role: "r",
                key: b"a",
                range_end: b""
            }),
            Err(ApiError::PermissionNotGranted)
        );
        s.apply(&Change::RoleRevokePermission {
            role: "r",
            key: b"a",
            range_end: b"c",
        })
        .unwrap();
        assert_eq!(s.roles["r"].perms.len(), 1);
    }

    #[test]
    fn state_round_trips_and_rejects_unknown_versions() {
        let mut s = with_root();
        s.apply(&Change::RoleAdd("r")).unwrap();
        assert_eq!(AuthState::decode(&s.encode()).unwrap(), s);
        s.version = 9;
        assert!(AuthState::decode(&s.encode()).is_err());
        assert!(AuthState::decode(b"garbage").is_err());
    }
}
