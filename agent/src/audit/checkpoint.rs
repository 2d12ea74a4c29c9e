//! Signed checkpoints of the audit log, kept outside the database in
//! `<state_dir>/audit-checkpoints/`: the host's Ed25519 key (`signing.key`,
//! PKCS#8, 0600, generated on first use), its public half (`signing.pub`,
//! hex), the latest checkpoint (`latest.json`) and the append-only journal
//! of every checkpoint (`journal.jsonl`, one per block). A database
//! replaced, emptied or rewritten no longer matches them.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use crate::engine::state_dir::{create_private_dir, FILE_MODE};

/// Directory under the state dir (next to `@timing`, not in the database).
pub const CHECKPOINT_DIR: &str = "audit-checkpoints";
const KEY_FILE: &str = "signing.key";
const PUB_FILE: &str = "signing.pub";
const LATEST_FILE: &str = "latest.json";
const JOURNAL_FILE: &str = "journal.jsonl";
const LOCK_FILE: &str = "lock";
/// Format tag of a checkpoint; also the first line of the signed text.
pub const FORMAT: &str = "op-dbus-audit-checkpoint-v1";

/// A signed statement "the log had `tree_size` records with Merkle root
/// `root_hash`, the last block was `block` with hash `block_hash`, at `timestamp`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: String,
    pub tree_size: u64,
    /// RFC 9162 MTH of the first `tree_size` records (hex).
    pub root_hash: String,
    pub block: i64,
    pub block_hash: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// Ed25519 public key (hex) that signed it.
    pub public_key: String,
    /// Ed25519 signature (hex) over [`Checkpoint::signed_text`].
    pub signature: String,
}

impl Checkpoint {
    /// The exact bytes signed: one field per line, in this order.
    pub fn signed_text(&self) -> String {
        format!(
            "{FORMAT}\ntree_size {}\nroot {}\nblock {}\nblock_hash {}\ntime {}\n",
            self.tree_size, self.root_hash, self.block, self.block_hash, self.timestamp
        )
    }

    /// Checks the signature with the key the checkpoint names.
    pub fn signature_ok(&self) -> bool {
        let (Ok(pk), Ok(sig)) = (hex::decode(&self.public_key), hex::decode(&self.signature))
        else {
            return false;
        };
        self.format == FORMAT
            && UnparsedPublicKey::new(&ED25519, pk)
                .verify(self.signed_text().as_bytes(), &sig)
                .is_ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an Ed25519 PKCS#8 key ({detail}); restore it from a backup")]
    BadKey { path: PathBuf, detail: String },
    #[error("the signing key {key} is missing but {journal} holds checkpoints signed with it: restore the key from a backup (a new key would hide a replaced history)")]
    KeyLost { key: PathBuf, journal: PathBuf },
    #[error("{path} line {line} is not a checkpoint: {source}")]
    Parse {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The checkpoint files of one state dir.
pub struct Store {
    dir: PathBuf,
}

/// Exclusive lock over appending a block and writing its checkpoint, so two
/// writers cannot interleave their journal lines or overwrite a newer
/// `latest.json` with an older one. Released on drop.
pub struct WriteLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Store {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join(CHECKPOINT_DIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn latest_path(&self) -> PathBuf {
        self.dir.join(LATEST_FILE)
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL_FILE)
    }

    fn ensure_dir(&self) -> Result<(), CheckpointError> {
        create_private_dir(&self.dir).map_err(io(&self.dir))
    }

    pub fn lock(&self) -> Result<WriteLock, CheckpointError> {
        self.ensure_dir()?;
        let path = self.dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io(&path))?;
        let locked = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(
            |(_, e)| CheckpointError::Io {
                path: path.clone(),
                source: e.into(),
            },
        )?;
        Ok(WriteLock { _lock: locked })
    }

    /// The latest checkpoint, if one was ever written.
    pub fn latest(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.latest_path();
        match std::fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice(&b)
                    .map(Some)
                    .map_err(|source| CheckpointError::Parse {
                        path,
                        line: 1,
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Every checkpoint in the journal, oldest first.
    pub fn journal(&self) -> Result<Vec<Checkpoint>, CheckpointError> {
        let path = self.journal_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&path)(e)),
        };
        // A last line without its newline that does not parse was torn by a
        // crash while being written (the journal is not synced): skipped.
        let torn = !text.ends_with('\n');
        let count = text.lines().count();
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .filter_map(|(i, l)| match serde_json::from_str(l) {
                Ok(cp) => Some(Ok(cp)),
                Err(_) if torn && i + 1 == count => None,
                Err(source) => Some(Err(CheckpointError::Parse {
                    path: path.clone(),
                    line: i + 1,
                    source,
                })),
            })
            .collect()
    }

    /// Whether any checkpoint exists (the log must then never start afresh).
    pub fn any(&self) -> bool {
        self.latest_path().exists() || self.journal_path().exists()
    }

    /// The host's public key (hex), if the key exists.
    pub fn public_key(&self) -> Result<Option<String>, CheckpointError> {
        let path = self.dir.join(PUB_FILE);
        match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => return Ok(Some(t.trim().to_string())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        // `signing.pub` is written without fsync: a crash right after the key
        // was made can lose it or leave it empty. The key has it.
        if !self.dir.join(KEY_FILE).exists() {
            return Ok(None);
        }
        let pub_hex = hex::encode(self.key()?.public_key().as_ref());
        // Best effort: a read-only copy of a state dir still verifies.
        let _ = replace_unsynced(&self.dir, PUB_FILE, format!("{pub_hex}\n").as_bytes());
        Ok(Some(pub_hex))
    }

    /// Loads the signing key, generating it (0600) on first use. A missing
    /// key is an error once checkpoints exist.
    fn key(&self) -> Result<Ed25519KeyPair, CheckpointError> {
        self.ensure_dir()?;
        let path = self.dir.join(KEY_FILE);
        let bad = |detail: String| CheckpointError::BadKey {
            path: path.clone(),
            detail,
        };
        match std::fs::read(&path) {
            Ok(pkcs8) => Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| bad(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.any() {
                    return Err(CheckpointError::KeyLost {
                        key: path,
                        journal: self.journal_path(),
                    });
                }
                let rng = ring::rand::SystemRandom::new();
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| bad(e.to_string()))?;
                let pair =
                    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| bad(e.to_string()))?;
                write_new(&path, pkcs8.as_ref())?;
                // Not synced: derived from the key, rewritten by
                // `public_key` when a crash lost it (one fsync less).
                let pub_hex = format!("{}\n", hex::encode(pair.public_key().as_ref()));
                replace_unsynced(&self.dir, PUB_FILE, pub_hex.as_bytes())
                    .map_err(io(&self.dir.join(PUB_FILE)))?;
                Ok(pair)
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Signs a checkpoint with the host's key without recording it (the
    /// archive base of [`crate::audit::archive`] keeps its own).
    pub fn sign(
        &self,
        tree_size: u64,
        root_hash: String,
        block: i64,
        block_hash: String,
        timestamp: i64,
    ) -> Result<Checkpoint, CheckpointError> {
        let key = self.key()?;
        let mut cp = Checkpoint {
            format: FORMAT.to_string(),
            tree_size,
            root_hash,
            block,
            block_hash,
            timestamp,
            public_key: hex::encode(key.public_key().as_ref()),
            signature: String::new(),
        };
        cp.signature = hex::encode(key.sign(cp.signed_text().as_bytes()).as_ref());
        Ok(cp)
    }

    /// Signs a checkpoint, appends it to the journal (not synced, see below) and replaces
    /// `latest.json`. Call with the [`WriteLock`] held.
    pub fn write(
        &self,
        tree_size: u64,
        root_hash: String,
        block: i64,
        block_hash: String,
        timestamp: i64,
    ) -> Result<Checkpoint, CheckpointError> {
        let cp = self.sign(tree_size, root_hash, block, block_hash, timestamp)?;
        let line = serde_json::to_string(&cp).unwrap_or_default();
        let journal = self.journal_path();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&journal)
            .map_err(io(&journal))?;
        // Not synced, nor is latest.json: the block is durable (SQLite WAL,
        // synchronous=FULL) before its checkpoint is written, so a checkpoint
        // never gets ahead of the database and a crash cannot raise a false
        // tamper alarm; it can only lose the last checkpoints (the next block's
        // supersedes them, a witness already has them) or tear the journal's
        // last line, which `journal` skips. A second fsync per apply would
        // cost as much as the block's own (measured: `--bench audit`).
        f.write_all(format!("{line}\n").as_bytes())
            .map_err(io(&journal))?;
        let pretty = serde_json::to_string_pretty(&cp).unwrap_or_default() + "\n";
        replace_unsynced(&self.dir, LATEST_FILE, pretty.as_bytes())
            .map_err(io(&self.latest_path()))?;
        Ok(cp)
    }
}

/// Replaces `dir/name` with `data` (0600) through a fresh temp file
/// (`O_EXCL|O_NOFOLLOW`, random name) and a rename, without fsync.
fn replace_unsynced(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let dfd: std::os::fd::OwnedFd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    let (tmp, mut f) = opdbus_common::rootfs::create_temp(&dfd, name.as_ref(), FILE_MODE)?;
    let done = f.write_all(data).and_then(|()| {
        nix::fcntl::renameat(&dfd, tmp.as_path(), &dfd, name).map_err(std::io::Error::from)
    });
    if done.is_err() {
        let _ = nix::unistd::unlinkat(&dfd, tmp.as_path(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
    done
}

/// Creates `path` 0600 with `data`, failing if it exists.
pub(crate) fn write_new(path: &Path, data: &[u8]) -> Result<(), CheckpointError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io(path))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(io(path))
}
