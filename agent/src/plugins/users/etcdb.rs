//! The account databases under a root directory: /etc/passwd, /etc/shadow,
//! /etc/group and /etc/gshadow, parsed into colon-separated lines, edited in
//! memory and rewritten atomically beneath the root with Debian's modes
//! (shadow: 0640 root:shadow). The writer refuses fields that would add or
//! split a line, whatever the caller validated.

use anyhow::Context as _;
use opdbus_common::rootfs::RootDir;
use opdbus_state::model::{name_problem, path_problem, text_problem, FieldProblem};

/// One line of a colon file; lines that are not entries are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Entry(Vec<String>),
    Other(String),
}

/// One colon-separated file with `fields` fields per entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    fields: usize,
    lines: Vec<Line>,
}

impl Table {
    pub fn parse(text: &str, fields: usize) -> Self {
        let lines = text
            .lines()
            .map(|l| {
                if l.trim().is_empty() || l.starts_with('#') || !l.contains(':') {
                    Line::Other(l.to_string())
                } else {
                    let mut f: Vec<String> = l.split(':').map(str::to_string).collect();
                    f.resize(fields.max(f.len()), String::new());
                    Line::Entry(f)
                }
            })
            .collect();
        Self { fields, lines }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            match l {
                Line::Entry(f) => out.push_str(&f.join(":")),
                Line::Other(s) => out.push_str(s),
            }
            out.push('\n');
        }
        out
    }

    pub fn entries(&self) -> impl Iterator<Item = &Vec<String>> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry(f) => Some(f),
            Line::Other(_) => None,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Vec<String>> {
        self.entries().find(|f| f[0] == name)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Vec<String>> {
        self.lines.iter_mut().find_map(|l| match l {
            Line::Entry(f) if f[0] == name => Some(f),
            _ => None,
        })
    }

    pub fn entries_mut(&mut self) -> impl Iterator<Item = &mut Vec<String>> {
        self.lines.iter_mut().filter_map(|l| match l {
            Line::Entry(f) => Some(f),
            Line::Other(_) => None,
        })
    }

    /// Adds or replaces the entry named `fields[0]`.
    pub fn upsert(&mut self, mut fields: Vec<String>) {
        fields.resize(self.fields.max(fields.len()), String::new());
        match self.get_mut(&fields[0].clone()) {
            Some(f) => *f = fields,
            None => self.lines.push(Line::Entry(fields)),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.lines
            .retain(|l| !matches!(l, Line::Entry(f) if f[0] == name));
    }
}

/// A comma-separated member list as a vector (empty string = no members).
pub fn members(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect()
}

/// A field the writer refuses to put into an account database: it would
/// split or add a line (`:`, a line break) or break the field's rule.
#[derive(Debug, thiserror::Error)]
#[error("refusing to write /etc/{file}: {field} of entry {entry:?} {problem}: fix the state (`op-dbus-agent validate` names the field)")]
pub struct FieldError {
    pub file: &'static str,
    pub entry: String,
    pub field: &'static str,
    /// Why (a rule, not an underlying error: part of the message).
    pub problem: FieldProblem,
}

/// Field names of each database, in order.
const PASSWD: &[&str] = &["name", "password", "uid", "gid", "comment", "home", "shell"];
const SHADOW: &[&str] = &[
    "name",
    "password hash",
    "last change",
    "minimum age",
    "maximum age",
    "warning period",
    "inactivity period",
    "expiration date",
    "reserved field",
];
const GROUP: &[&str] = &["name", "password", "gid", "members"];
const GSHADOW: &[&str] = &["name", "password", "administrators", "members"];

/// The rule of one field: a new entry's name, absolute paths, text (no
/// separator, line break or control character) for everything else.
fn field_problem(file: &str, index: usize, value: &str, new: bool) -> Option<FieldProblem> {
    match (file, index) {
        (_, 0) if new => name_problem(value),
        ("passwd", 5 | 6) => path_problem(value),
        _ => text_problem(value),
    }
}

/// Every entry of `table` that is not in `before` as it was, checked field by
/// field: lines already there are kept as found, new or changed ones obey
/// the rules (the name rule only for names not there before, so an account
/// created with `useradd --badname` can still be edited).
fn check_table(
    file: &'static str,
    names: &'static [&'static str],
    table: &Table,
    before: &Table,
) -> Result<(), FieldError> {
    let old: std::collections::HashSet<&Vec<String>> = before.entries().collect();
    for f in table.entries().filter(|f| !old.contains(f)) {
        let new = before.get(&f[0]).is_none();
        for (i, value) in f.iter().enumerate() {
            if let Some(problem) = field_problem(file, i, value, new) {
                return Err(FieldError {
                    file,
                    entry: f[0].clone(),
                    field: names.get(i).copied().unwrap_or("extra field"),
                    problem,
                });
            }
        }
    }
    Ok(())
}

/// The four databases of one root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcDb {
    pub passwd: Table,
    pub shadow: Table,
    pub group: Table,
    pub gshadow: Table,
}

/// A database file of the root, read beneath it (a final symlink is an
/// error); a missing one is empty.
fn read_optional(root: &RootDir, name: &str) -> anyhow::Result<String> {
    let path = format!("/etc/{name}");
    match root.read_to_string(&path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", root.display_path(&path).display())),
    }
}

/// Refuses an `/etc` that is a symlink leading nowhere inside the root (such
/// as `etc -> /some/host/dir` in a target before first boot): reading it
/// would find no accounts, and nothing is written through it.
fn check_etc(root: &RootDir) -> anyhow::Result<()> {
    let Err(e) = root.open_dir("/etc") else {
        return Ok(());
    };
    let shown = root.display_path("/etc");
    match root.symlink_metadata("/etc") {
        Err(_) => Ok(()),
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
            let target = std::fs::read_link(&shown).unwrap_or_default();
            anyhow::bail!(
                "{} is a symlink to {} that leads nowhere inside the root: refusing to follow it out of the root; make etc a directory of the root",
                shown.display(),
                target.display()
            )
        }
        Ok(_) => Err(e).with_context(|| format!("opening {}", shown.display())),
    }
}

impl EtcDb {
    pub fn load(root: &RootDir) -> anyhow::Result<Self> {
        check_etc(root)?;
        Ok(Self {
            passwd: Table::parse(&read_optional(root, "passwd")?, 7),
            shadow: Table::parse(&read_optional(root, "shadow")?, 9),
            group: Table::parse(&read_optional(root, "group")?, 4),
            gshadow: Table::parse(&read_optional(root, "gshadow")?, 4),
        })
    }
    pub fn uid_of(&self, user: &str) -> Option<(u32, u32)> {
        let f = self.passwd.get(user)?;
        Some((f[2].parse().ok()?, f[3].parse().ok()?))
    }

    pub fn gid_of(&self, group: &str) -> Option<u32> {
        self.group.get(group)?[2].parse().ok()
    }

    pub fn uid_used(&self, uid: u32) -> bool {
        self.passwd
            .entries()
            .any(|f| f[2].parse::<u32>().ok() == Some(uid))
    }

    pub fn gid_used(&self, gid: u32) -> bool {
        self.group
            .entries()
            .any(|f| f[2].parse::<u32>().ok() == Some(gid))
    }

    /// Supplementary groups of `user` (groups listing it as a member).
    pub fn groups_of(&self, user: &str) -> Vec<String> {
        self.group
            .entries()
            .filter(|f| members(&f[3]).iter().any(|m| m == user))
            .map(|f| f[0].clone())
            .collect()
    }

    /// Next free id: regular ids count up from 1000, system ids down from 999.
    pub fn free_id(&self, system: bool, used: impl Fn(u32) -> bool) -> anyhow::Result<u32> {
        let found = if system {
            (100..1000).rev().find(|id| !used(*id))
        } else {
            (1000..60000).find(|id| !used(*id))
        };
        found.context("no free id left in the range")
    }

    /// Rewrites the files whose content differs from `before`, each atomically
    /// beneath `root` (a symlinked `etc` resolves inside the root, never on
    /// the host). Every new or changed entry is checked first; nothing is
    /// written when one is refused.
    pub fn write(&self, root: &RootDir, before: &EtcDb) -> anyhow::Result<()> {
        let shadow_gid = self.gid_of("shadow").unwrap_or(0);
        let files = [
            ("passwd", PASSWD, &self.passwd, &before.passwd, 0o644, 0),
            ("group", GROUP, &self.group, &before.group, 0o644, 0),
            (
                "shadow",
                SHADOW,
                &self.shadow,
                &before.shadow,
                0o640,
                shadow_gid,
            ),
            (
                "gshadow",
                GSHADOW,
                &self.gshadow,
                &before.gshadow,
                0o640,
                shadow_gid,
            ),
        ];
        for (name, names, table, old, ..) in files {
            check_table(name, names, table, old)
                .with_context(|| format!("updating the accounts of {}", root.path().display()))?;
        }
        for (name, _, table, old, mode, gid) in files {
            let path = format!("/etc/{name}");
            if table == old && root.exists(&path) {
                continue;
            }
            root.write_atomic(&path, table.render().as_bytes(), mode, Some((0, gid)))
                .with_context(|| format!("writing {}", root.display_path(&path).display()))?;
        }
        Ok(())
    }
}
