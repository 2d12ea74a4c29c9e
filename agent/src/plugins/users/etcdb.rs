//! The account databases under a root directory: /etc/passwd, /etc/shadow,
//! /etc/group and /etc/gshadow, parsed into colon-separated lines, edited in
//! memory and rewritten atomically with Debian's modes (shadow: 0640 root:shadow).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

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

/// The four databases of one root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcDb {
    root: PathBuf,
    pub passwd: Table,
    pub shadow: Table,
    pub group: Table,
    pub gshadow: Table,
}

fn read_optional(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl EtcDb {
    pub fn load(root: &Path) -> anyhow::Result<Self> {
        let etc = root.join("etc");
        Ok(Self {
            root: root.to_path_buf(),
            passwd: Table::parse(&read_optional(&etc.join("passwd"))?, 7),
            shadow: Table::parse(&read_optional(&etc.join("shadow"))?, 9),
            group: Table::parse(&read_optional(&etc.join("group"))?, 4),
            gshadow: Table::parse(&read_optional(&etc.join("gshadow"))?, 4),
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

    /// Rewrites the files whose content differs from `before`, each atomically.
    pub fn write(&self, before: &EtcDb) -> anyhow::Result<()> {
        let shadow_gid = self.gid_of("shadow").unwrap_or(0);
        let etc = self.root.join("etc");
        std::fs::create_dir_all(&etc).with_context(|| format!("creating {}", etc.display()))?;
        let files = [
            ("passwd", &self.passwd, &before.passwd, 0o644, 0),
            ("group", &self.group, &before.group, 0o644, 0),
            ("shadow", &self.shadow, &before.shadow, 0o640, shadow_gid),
            ("gshadow", &self.gshadow, &before.gshadow, 0o640, shadow_gid),
        ];
        for (name, table, old, mode, gid) in files {
            if table == old && etc.join(name).exists() {
                continue;
            }
            write_atomic(&etc.join(name), table.render().as_bytes(), mode, 0, gid)?;
        }
        Ok(())
    }
}

/// Writes `data` to a temp file next to `path` with mode and owner, syncs it
/// and renames it over `path`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32, uid: u32, gid: u32) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path.parent().context("path without a parent directory")?;
    let name = path
        .file_name()
        .context("path without a file name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.opdbus-tmp"));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}
