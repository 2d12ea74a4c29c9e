//! users plugin: accounts, groups, supplementary groups, shells, home
//! directories, password hashes and SSH authorized keys, written straight into
//! the account files under the context root (testable, works in a target root).
//! Every write stays beneath that root (`opdbus_common::rootfs::RootDir`), and
//! writes into homes go through directory fds checked to be the user's
//! (`home`).

mod etcdb;
mod home;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use etcdb::members;
pub use etcdb::{EtcDb, FieldError};
use home::Owner;
use opdbus_common::rootfs::RootDir;

use crate::engine::{ActionResult, Context, Plugin, PluginAction};
use opdbus_state::model::{Presence, Users};
use opdbus_state::State;

/// The desired slice is the state's own `plugins.users`.
pub type Desired = Users;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountCurrent {
    pub uid: u32,
    pub gid: u32,
    pub comment: String,
    pub home: String,
    pub shell: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// Supplementary groups.
    pub groups: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCurrent {
    pub gid: u32,
}

/// `~/.ssh/authorized_keys` as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysCurrent {
    pub keys: Vec<String>,
    pub dir_mode: u32,
    pub file_mode: u32,
    /// (uid, gid) of ~/.ssh and of the file.
    pub dir_owner: (u32, u32),
    pub file_owner: (u32, u32),
}

/// Home directory and keys of one named account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeCurrent {
    pub home_exists: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeysCurrent>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    /// Named accounts that exist.
    pub accounts: BTreeMap<String, AccountCurrent>,
    /// Named groups, supplementary groups and user-private groups that exist.
    pub groups: BTreeMap<String, GroupCurrent>,
    /// Home and keys of every named, present account.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub homes: BTreeMap<String, HomeCurrent>,
    /// Regular accounts (uid >= 1000) the state does not name; only with `prune`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unnamed_regular: Vec<String>,
}

/// Fields of an account to change; `None` = leave.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    CreateGroup {
        group: String,
        gid: Option<u32>,
        system: bool,
    },
    SetGroupGid {
        group: String,
        gid: u32,
    },
    /// `gid: None` = the group named like the user.
    CreateUser {
        user: String,
        uid: Option<u32>,
        gid: Option<u32>,
        comment: String,
        home: String,
        shell: String,
        system: bool,
        password_hash: String,
    },
    ModifyUser {
        user: String,
        change: AccountChange,
    },
    SetPassword {
        user: String,
        password_hash: String,
    },
    AddToGroups {
        user: String,
        groups: Vec<String>,
    },
    RemoveFromGroups {
        user: String,
        groups: Vec<String>,
    },
    CreateHome {
        user: String,
        path: String,
    },
    /// Writes exactly `keys` to ~/.ssh/authorized_keys (0600, ~/.ssh 0700, owned by the user).
    SetAuthorizedKeys {
        user: String,
        keys: Vec<String>,
    },
    DeleteUser {
        user: String,
    },
    DeleteGroup {
        group: String,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = |v: &Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "auto".into());
        match self {
            Action::CreateGroup { group, gid, system } => write!(
                f,
                "create {}group {group} (gid {})",
                if *system { "system " } else { "" },
                id(gid)
            ),
            Action::SetGroupGid { group, gid } => write!(f, "change gid of group {group} to {gid}"),
            Action::CreateUser {
                user,
                uid,
                shell,
                home,
                system,
                ..
            } => write!(
                f,
                "create {}user {user} (uid {}, home {home}, shell {shell})",
                if *system { "system " } else { "" },
                id(uid)
            ),
            Action::ModifyUser { user, change } => {
                let mut parts = Vec::new();
                if let Some(v) = change.uid {
                    parts.push(format!("uid {v}"));
                }
                if let Some(v) = change.gid {
                    parts.push(format!("gid {v}"));
                }
                if let Some(v) = &change.comment {
                    parts.push(format!("comment '{v}'"));
                }
                if let Some(v) = &change.home {
                    parts.push(format!("home {v}"));
                }
                if let Some(v) = &change.shell {
                    parts.push(format!("shell {v}"));
                }
                write!(f, "change user {user}: {}", parts.join(", "))
            }
            Action::SetPassword { user, .. } => write!(f, "set the password hash of {user}"),
            Action::AddToGroups { user, groups } => {
                write!(f, "add {user} to groups {}", groups.join(","))
            }
            Action::RemoveFromGroups { user, groups } => {
                write!(f, "remove {user} from groups {} (prune)", groups.join(","))
            }
            Action::CreateHome { user, path } => write!(f, "create home {path} of {user}"),
            Action::SetAuthorizedKeys { user, keys } => {
                write!(f, "write {} SSH authorized key(s) of {user}", keys.len())
            }
            Action::DeleteUser { user } => write!(f, "delete user {user} (home is kept)"),
            Action::DeleteGroup { group } => write!(f, "delete group {group}"),
        }
    }
}

impl PluginAction for Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::CreateGroup { .. } => "create-group",
            Action::SetGroupGid { .. } => "set-group-gid",
            Action::CreateUser { .. } => "create-user",
            Action::ModifyUser { .. } => "modify-user",
            Action::SetPassword { .. } => "set-password",
            Action::AddToGroups { .. } => "add-to-groups",
            Action::RemoveFromGroups { .. } => "remove-from-groups",
            Action::CreateHome { .. } => "create-home",
            Action::SetAuthorizedKeys { .. } => "set-authorized-keys",
            Action::DeleteUser { .. } => "delete-user",
            Action::DeleteGroup { .. } => "delete-group",
        }
    }

    fn resource(&self) -> String {
        match self {
            Action::CreateGroup { group, .. }
            | Action::SetGroupGid { group, .. }
            | Action::DeleteGroup { group } => {
                format!("group:{group}")
            }
            Action::CreateUser { user, .. }
            | Action::ModifyUser { user, .. }
            | Action::SetPassword { user, .. }
            | Action::AddToGroups { user, .. }
            | Action::RemoveFromGroups { user, .. }
            | Action::CreateHome { user, .. }
            | Action::SetAuthorizedKeys { user, .. }
            | Action::DeleteUser { user } => format!("user:{user}"),
        }
    }
}

fn default_home(name: &str, a: &opdbus_state::model::Account) -> String {
    a.home.clone().unwrap_or_else(|| format!("/home/{name}"))
}

fn default_shell(a: &opdbus_state::model::Account) -> String {
    a.shell.clone().unwrap_or_else(|| {
        if a.system {
            "/usr/sbin/nologin"
        } else {
            "/bin/bash"
        }
        .to_string()
    })
}

/// Whether the plugin creates/keeps a home directory for this account.
fn wants_home(a: &opdbus_state::model::Account) -> bool {
    !a.system || a.home.is_some() || !a.ssh_authorized_keys.is_empty()
}

/// The pure diff. Order: groups, users, password, memberships, homes, keys,
/// then deletions.
pub fn diff(current: &Current, desired: &Desired) -> Vec<Action> {
    let mut out = Vec::new();
    let mut deletes = Vec::new();
    let present = |p: Presence| p == Presence::Present;
    let mut will_exist: BTreeSet<String> = current.groups.keys().cloned().collect();

    for (name, g) in &desired.groups {
        match (current.groups.get(name), present(g.state)) {
            (None, true) => {
                out.push(Action::CreateGroup {
                    group: name.clone(),
                    gid: g.gid,
                    system: g.system,
                });
                will_exist.insert(name.clone());
            }
            (Some(cur), true) => {
                if let Some(gid) = g.gid.filter(|gid| *gid != cur.gid) {
                    out.push(Action::SetGroupGid {
                        group: name.clone(),
                        gid,
                    });
                }
            }
            (Some(_), false) => deletes.push(Action::DeleteGroup {
                group: name.clone(),
            }),
            (None, false) => {}
        }
    }

    for (name, a) in &desired.accounts {
        let cur = current.accounts.get(name);
        if !present(a.state) {
            if cur.is_some() {
                deletes.insert(0, Action::DeleteUser { user: name.clone() });
            }
            continue;
        }
        let home = default_home(name, a);
        match cur {
            None => {
                if a.gid.is_none() && !will_exist.contains(name) {
                    out.push(Action::CreateGroup {
                        group: name.clone(),
                        gid: a.uid,
                        system: a.system,
                    });
                    will_exist.insert(name.clone());
                }
                out.push(Action::CreateUser {
                    user: name.clone(),
                    uid: a.uid,
                    gid: a.gid,
                    comment: a.comment.clone().unwrap_or_default(),
                    home: home.clone(),
                    shell: default_shell(a),
                    system: a.system,
                    password_hash: a
                        .password_hash
                        .clone()
                        .unwrap_or_else(|| if a.system { "*" } else { "!" }.to_string()),
                });
            }
            Some(c) => {
                let change = AccountChange {
                    uid: a.uid.filter(|v| *v != c.uid),
                    gid: a.gid.filter(|v| *v != c.gid),
                    comment: a.comment.clone().filter(|v| *v != c.comment),
                    home: a.home.clone().filter(|v| *v != c.home),
                    shell: a.shell.clone().filter(|v| *v != c.shell),
                };
                if change != AccountChange::default() {
                    out.push(Action::ModifyUser {
                        user: name.clone(),
                        change,
                    });
                }
                if let Some(h) = a
                    .password_hash
                    .as_ref()
                    .filter(|h| c.password_hash.as_ref() != Some(*h))
                {
                    out.push(Action::SetPassword {
                        user: name.clone(),
                        password_hash: h.clone(),
                    });
                }
            }
        }
        let have: BTreeSet<String> = cur.map(|c| c.groups.clone()).unwrap_or_default();
        let add: Vec<String> = a
            .groups
            .iter()
            .filter(|g| !have.contains(*g))
            .cloned()
            .collect();
        if !add.is_empty() {
            out.push(Action::AddToGroups {
                user: name.clone(),
                groups: add,
            });
        }
        if desired.prune {
            let wanted: BTreeSet<&String> = a.groups.iter().collect();
            let remove: Vec<String> = have
                .iter()
                .filter(|g| !wanted.contains(g))
                .cloned()
                .collect();
            if !remove.is_empty() {
                out.push(Action::RemoveFromGroups {
                    user: name.clone(),
                    groups: remove,
                });
            }
        }
        let files = current.homes.get(name).cloned().unwrap_or_default();
        let home_path = cur
            .filter(|_| a.home.is_none())
            .map(|c| c.home.clone())
            .unwrap_or(home);
        if wants_home(a) && !files.home_exists {
            out.push(Action::CreateHome {
                user: name.clone(),
                path: home_path,
            });
        }
        if !a.ssh_authorized_keys.is_empty() {
            let found = files.keys.as_ref();
            let mut keys: Vec<String> = if desired.prune {
                Vec::new()
            } else {
                found.map(|k| k.keys.clone()).unwrap_or_default()
            };
            for k in &a.ssh_authorized_keys {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
            let owner = cur.map(|c| (a.uid.unwrap_or(c.uid), a.gid.unwrap_or(c.gid)));
            let right = found.is_some_and(|k| {
                k.keys == keys
                    && k.dir_mode == 0o700
                    && k.file_mode == 0o600
                    && owner.is_some_and(|o| k.dir_owner == o && k.file_owner == o)
            });
            if !right {
                out.push(Action::SetAuthorizedKeys {
                    user: name.clone(),
                    keys,
                });
            }
        }
    }
    if desired.prune {
        for user in &current.unnamed_regular {
            deletes.push(Action::DeleteUser { user: user.clone() });
        }
    }
    out.extend(deletes);
    out
}

/// Opens the managed root; every file of the plugin is reached through it.
fn open_root(root: &Path) -> anyhow::Result<RootDir> {
    RootDir::open(root).with_context(|| format!("opening the root directory {}", root.display()))
}

/// Reads what `desired` names from the databases and home directories under `root`.
pub fn query(root: &Path, desired: &Desired) -> anyhow::Result<Current> {
    let root = open_root(root)?;
    let db = EtcDb::load(&root)?;
    let mut cur = Current::default();
    let mut group_names: BTreeSet<&String> = desired.groups.keys().collect();
    for (name, a) in &desired.accounts {
        group_names.insert(name);
        group_names.extend(a.groups.iter());
        if let Some(f) = db.passwd.get(name) {
            let acct = AccountCurrent {
                uid: f[2].parse().unwrap_or(u32::MAX),
                gid: f[3].parse().unwrap_or(u32::MAX),
                comment: f[4].clone(),
                home: f[5].clone(),
                shell: f[6].clone(),
                password_hash: db.shadow.get(name).map(|s| s[1].clone()),
                groups: db.groups_of(name).into_iter().collect(),
            };
            let home = a.home.clone().unwrap_or_else(|| acct.home.clone());
            cur.homes.insert(
                name.clone(),
                HomeCurrent {
                    home_exists: home::home_exists(&root, &home),
                    keys: home::keys_current(&root, &home, acct.uid),
                },
            );
            cur.accounts.insert(name.clone(), acct);
        } else if a.state == Presence::Present {
            let home = default_home(name, a);
            cur.homes.insert(
                name.clone(),
                HomeCurrent {
                    home_exists: home::home_exists(&root, &home),
                    keys: home::keys_current(&root, &home, a.uid.unwrap_or(u32::MAX)),
                },
            );
        }
    }
    for g in group_names {
        if let Some(gid) = db.gid_of(g) {
            cur.groups.insert(g.clone(), GroupCurrent { gid });
        }
    }
    if desired.prune {
        cur.unnamed_regular = db
            .passwd
            .entries()
            .filter(|f| {
                let uid: u32 = f[2].parse().unwrap_or(0);
                (1000..65534).contains(&uid) && !desired.accounts.contains_key(&f[0])
            })
            .map(|f| f[0].clone())
            .collect();
    }
    Ok(cur)
}

fn days_since_epoch() -> String {
    (time::OffsetDateTime::now_utc().unix_timestamp() / 86400).to_string()
}

fn set_members(db: &mut EtcDb, group: &str, user: &str, member: bool) -> anyhow::Result<()> {
    let edit = |field: &mut String| {
        let mut m = members(field);
        m.retain(|x| x != user);
        if member {
            m.push(user.to_string());
        }
        *field = m.join(",");
    };
    let g = db.group.get_mut(group).with_context(|| {
        format!("group '{group}' does not exist: declare it under users.groups or install the package that creates it")
    })?;
    edit(&mut g[3]);
    match db.gshadow.get_mut(group) {
        Some(gs) => edit(&mut gs[3]),
        None if member => {
            db.gshadow
                .upsert(vec![group.into(), "!".into(), String::new(), user.into()])
        }
        None => {}
    }
    Ok(())
}

/// Applies one account-database action to the in-memory databases.
fn apply_db(db: &mut EtcDb, a: &Action) -> anyhow::Result<()> {
    match a {
        Action::CreateGroup { group, gid, system } => {
            let gid = match gid {
                Some(g) if !db.gid_used(*g) => *g,
                Some(g) => anyhow::bail!("gid {g} is already used by another group"),
                None => db.free_id(*system, |id| db.gid_used(id))?,
            };
            db.group.upsert(vec![
                group.clone(),
                "x".into(),
                gid.to_string(),
                String::new(),
            ]);
            db.gshadow.upsert(vec![
                group.clone(),
                "!".into(),
                String::new(),
                String::new(),
            ]);
        }
        Action::SetGroupGid { group, gid } => {
            anyhow::ensure!(
                !db.gid_used(*gid),
                "gid {gid} is already used by another group"
            );
            db.group
                .get_mut(group)
                .with_context(|| format!("group '{group}' does not exist"))?[2] = gid.to_string();
        }
        Action::CreateUser {
            user,
            uid,
            gid,
            comment,
            home,
            shell,
            system,
            password_hash,
        } => {
            let gid = match gid {
                Some(g) => *g,
                None => db
                    .gid_of(user)
                    .with_context(|| format!("the primary group '{user}' does not exist"))?,
            };
            let uid = match uid {
                Some(u) if db.uid_used(*u) => {
                    anyhow::bail!("uid {u} is already used by another account")
                }
                Some(u) => *u,
                None if !db.uid_used(gid) && (gid >= 1000) != *system && gid >= 100 => gid,
                None => db.free_id(*system, |id| db.uid_used(id))?,
            };
            db.passwd.upsert(vec![
                user.clone(),
                "x".into(),
                uid.to_string(),
                gid.to_string(),
                comment.clone(),
                home.clone(),
                shell.clone(),
            ]);
            db.shadow.upsert(vec![
                user.clone(),
                password_hash.clone(),
                days_since_epoch(),
                "0".into(),
                "99999".into(),
                "7".into(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        Action::ModifyUser { user, change } => {
            if let Some(uid) = change.uid {
                anyhow::ensure!(
                    !db.uid_used(uid),
                    "uid {uid} is already used by another account"
                );
            }
            let f = db
                .passwd
                .get_mut(user)
                .with_context(|| format!("user '{user}' does not exist"))?;
            if let Some(v) = change.uid {
                f[2] = v.to_string();
            }
            if let Some(v) = change.gid {
                f[3] = v.to_string();
            }
            if let Some(v) = &change.comment {
                f[4] = v.clone();
            }
            if let Some(v) = &change.home {
                f[5] = v.clone();
            }
            if let Some(v) = &change.shell {
                f[6] = v.clone();
            }
        }
        Action::SetPassword {
            user,
            password_hash,
        } => match db.shadow.get_mut(user) {
            Some(s) => {
                s[1] = password_hash.clone();
                s[2] = days_since_epoch();
            }
            None => db.shadow.upsert(vec![
                user.clone(),
                password_hash.clone(),
                days_since_epoch(),
                "0".into(),
                "99999".into(),
                "7".into(),
            ]),
        },
        Action::AddToGroups { user, groups } => {
            for g in groups {
                set_members(db, g, user, true)?;
            }
        }
        Action::RemoveFromGroups { user, groups } => {
            for g in groups {
                set_members(db, g, user, false)?;
            }
        }
        Action::DeleteUser { user } => {
            let (_, gid) = db
                .uid_of(user)
                .with_context(|| format!("user '{user}' does not exist"))?;
            db.passwd.remove(user);
            db.shadow.remove(user);
            for g in db.groups_of(user) {
                set_members(db, &g, user, false)?;
            }
            // The user-private group goes with the user when nobody else uses it.
            let private = db.gid_of(user) == Some(gid)
                && db.group.get(user).is_some_and(|f| f[3].is_empty())
                && !db.passwd.entries().any(|f| f[3] == gid.to_string());
            if private {
                db.group.remove(user);
                db.gshadow.remove(user);
            }
        }
        Action::DeleteGroup { group } => {
            let gid = db
                .gid_of(group)
                .with_context(|| format!("group '{group}' does not exist"))?;
            anyhow::ensure!(
                !db.passwd.entries().any(|f| f[3] == gid.to_string()),
                "group '{group}' is the primary group of an account: change or delete that account first"
            );
            db.group.remove(group);
            db.gshadow.remove(group);
        }
        Action::CreateHome { .. } | Action::SetAuthorizedKeys { .. } => {}
    }
    Ok(())
}

/// The owner a home of `user` gets: the account as now in `db`.
fn owner_of(db: &EtcDb, user: &str) -> anyhow::Result<Owner> {
    let (uid, gid) = db
        .uid_of(user)
        .with_context(|| format!("user '{user}' does not exist"))?;
    Ok(Owner { uid, gid })
}

fn set_keys(root: &RootDir, db: &EtcDb, user: &str, keys: &[String]) -> anyhow::Result<()> {
    let owner = owner_of(db, user)?;
    let home = &db.passwd.get(user).context("user vanished")?[5];
    home::set_keys(root, home, owner, keys)
}

/// Applies `actions` to the files under `root`: database actions in memory,
/// one atomic rewrite per changed file, then homes and keys.
pub fn apply(root: &Path, actions: &[Action]) -> Vec<ActionResult> {
    let loaded = open_root(root).and_then(|r| EtcDb::load(&r).map(|db| (r, db)));
    let (root, before) = match loaded {
        Ok(x) => x,
        Err(e) => {
            let msg = format!("{e:#}");
            return actions
                .iter()
                .map(|_| Err(anyhow::anyhow!("{msg}").into()))
                .collect();
        }
    };
    let mut db = before.clone();
    let mut results: Vec<ActionResult> = actions
        .iter()
        .map(|a| apply_db(&mut db, a).map(|()| None).map_err(Into::into))
        .collect();
    if let Err(e) = db.write(&root, &before) {
        let msg = format!("{e:#}");
        for r in results.iter_mut() {
            if r.is_ok() {
                *r = Err(anyhow::anyhow!("{msg}").into());
            }
        }
        return results;
    }
    for (a, r) in actions.iter().zip(results.iter_mut()) {
        let done = match a {
            Action::CreateHome { user, path } => {
                owner_of(&db, user).and_then(|o| home::create_home(&root, path, o))
            }
            Action::SetAuthorizedKeys { user, keys } => set_keys(&root, &db, user, keys),
            _ => continue,
        };
        *r = done.map(|()| None).map_err(Into::into);
    }
    results
}

pub struct UsersPlugin;

impl Plugin for UsersPlugin {
    type Desired = Desired;
    type Current = Current;
    type Action = Action;
    type Checkpoint = ();

    fn name(&self) -> &'static str {
        "users"
    }

    /// Password hashes (current accounts, create-user, set-password).
    fn redact(&self, v: &mut serde_json::Value) {
        crate::engine::secret::redact_keys(v, &["password_hash"]);
    }

    fn desired(&self, state: &State) -> anyhow::Result<Option<Desired>> {
        Ok(state.plugins.users.clone())
    }

    async fn query(&self, ctx: &Context, desired: &Desired) -> anyhow::Result<Current> {
        query(&ctx.root, desired)
    }

    fn diff(&self, current: &Current, desired: &Desired) -> Vec<Action> {
        diff(current, desired)
    }

    async fn apply(&self, ctx: &Context, actions: &[Action]) -> Vec<ActionResult> {
        apply(&ctx.root, actions)
    }

    /// Regular accounts (uid 1000-65533), root when it has SSH keys, their
    /// groups; never a password hash.
    async fn discover(&self, ctx: &Context) -> anyhow::Result<Option<serde_json::Value>> {
        let root = open_root(&ctx.root)?;
        let db = EtcDb::load(&root)?;
        let mut keys = BTreeMap::new();
        for f in db.passwd.entries().filter(|f| discoverable(f)) {
            let uid = f[2].parse().unwrap_or(u32::MAX);
            if let Some(k) = home::keys_current(&root, &f[5], uid) {
                keys.insert(f[0].clone(), k.keys);
            }
        }
        let users = discover_section(&db, &keys);
        if users.accounts.is_empty() && users.groups.is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::json!({ "users": users })))
    }
}

/// The uids of regular accounts, as `prune` counts them.
const REGULAR: std::ops::Range<u32> = 1000..65534;

/// A passwd entry `discover` describes: a regular account, or root.
fn discoverable(f: &[String]) -> bool {
    f[2].parse::<u32>()
        .is_ok_and(|uid| uid == 0 || REGULAR.contains(&uid))
}

/// `plugins.users` for the accounts of `db` (regular ones, and root when
/// `keys` has some for it), with `keys` (authorized keys by account) and
/// the groups they use: the groups of gid 1000-65533 and every
/// supplementary group of a described account. Password hashes are
/// secrets and never part of it: the diff then leaves passwords alone.
pub fn discover_section(db: &EtcDb, keys: &BTreeMap<String, Vec<String>>) -> Users {
    use opdbus_state::model::{Account, Group};
    let mut users = Users::default();
    let mut wanted_groups: BTreeSet<String> = BTreeSet::new();
    for f in db.passwd.entries().filter(|f| discoverable(f)) {
        let name = &f[0];
        let uid: u32 = f[2].parse().unwrap_or(u32::MAX);
        let account_keys = keys.get(name).cloned().unwrap_or_default();
        if uid == 0 && account_keys.is_empty() {
            continue;
        }
        let mut groups = db.groups_of(name);
        groups.sort();
        wanted_groups.extend(groups.iter().cloned());
        users.accounts.insert(
            name.clone(),
            Account {
                uid: Some(uid),
                gid: f[3].parse().ok(),
                shell: Some(f[6].clone()),
                home: Some(f[5].clone()),
                comment: Some(f[4].clone()).filter(|c| !c.is_empty()),
                groups,
                ssh_authorized_keys: account_keys,
                ..Account::default()
            },
        );
    }
    for g in db.group.entries() {
        let Ok(gid) = g[2].parse::<u32>() else {
            continue;
        };
        if REGULAR.contains(&gid) || wanted_groups.contains(&g[0]) {
            users.groups.insert(
                g[0].clone(),
                Group {
                    gid: Some(gid),
                    system: gid < 1000,
                    ..Group::default()
                },
            );
        }
    }
    users
}
