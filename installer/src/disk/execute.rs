//! The executor: checks every target, inspects what is already on it (table,
//! filesystems, subvolumes: Present / Missing / Conflicting), then does only
//! what is missing. A filesystem of the planned kind is kept and adopted
//! (its on-disk UUID replaces the planned one); only a provably empty
//! partition counts as missing, anything else on it is a conflict that needs
//! consent. On failure, guards are released in reverse order and a
//! partition table written by this run is wiped.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::blockdev::{self, SafetyError, TargetInfo, TargetKind};
use super::btrfs::{self, SubvolState};
use super::esp::{self, Esp, EspError, EspLocation};
use super::fs::{self, Contents};
use super::loopdev::LoopGuard;
use super::mount::{MountGuard, MountStack};
use super::partition::{self, FoundTable};
use super::plan::{DevicePlan, DiskPlan, FsKind, PartitionPlan};

/// Plan device key (`/dev/sda`) → real target (block device or image file).
pub type TargetMap = BTreeMap<String, PathBuf>;

/// How to execute.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Allows overwriting partition tables and filesystems (`--yes`).
    pub consent: bool,
    /// Replaces filesystems of the planned kind too, instead of adopting them
    /// (`--reformat`; replacing still needs `consent`).
    pub reformat: bool,
    /// Inspect and report only; write nothing.
    pub dry_run: bool,
    /// Mount the installed system's tree here and keep it mounted (returned
    /// as a [`MountedTarget`]).
    pub mount_at: Option<PathBuf>,
    /// How long to wait for partition nodes.
    pub node_timeout: Duration,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            consent: false,
            reformat: false,
            dry_run: false,
            mount_at: None,
            node_timeout: Duration::from_secs(10),
        }
    }
}

/// State of one planned item on the target, before execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Present,
    Missing,
    Conflicting,
    /// Not looked at (dry run: it needs a mount).
    Unchecked,
}

/// One planned item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Item {
    PartitionTable {
        device: String,
    },
    Filesystem {
        partition: String,
        fstype: FsKind,
    },
    Subvolume {
        partition: String,
        name: String,
    },
    DefaultSubvolume {
        partition: String,
        name: String,
    },
    /// A further member of a multi-device btrfs.
    RaidMember {
        partition: String,
        filesystem: String,
    },
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::PartitionTable { device } => write!(f, "partition table of {device}"),
            Item::Filesystem { partition, fstype } => {
                write!(f, "{} filesystem on {partition}", fstype.as_str())
            }
            Item::Subvolume { partition, name } => write!(f, "subvolume {name} on {partition}"),
            Item::DefaultSubvolume { partition, name } => {
                write!(f, "default subvolume {name} on {partition}")
            }
            Item::RaidMember {
                partition,
                filesystem,
            } => write!(f, "{partition} as a member of the btrfs on {filesystem}"),
        }
    }
}

/// What the executor does (or, in a dry run, would do) with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Already as planned.
    Keep,
    Create,
    /// Overwrite conflicting content (needs consent).
    Replace,
    /// Unknown until mounted (dry run).
    Check,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemReport {
    pub item: Item,
    pub status: ItemStatus,
    pub action: Action,
    /// What inspection found where the item goes, when it is not what the
    /// plan says (a conflict, or an adopted filesystem's UUID).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
}

/// What an execution found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ExecReport {
    pub dry_run: bool,
    pub items: Vec<ItemReport>,
}

impl ExecReport {
    /// True when every item was already as planned.
    pub fn nothing_to_do(&self) -> bool {
        self.items.iter().all(|i| i.action == Action::Keep)
    }

    /// Items that were (or would be) created or replaced.
    pub fn changes(&self) -> Vec<&ItemReport> {
        self.items
            .iter()
            .filter(|i| matches!(i.action, Action::Create | Action::Replace))
            .collect()
    }

    fn push(&mut self, item: Item, status: ItemStatus, action: Action) {
        self.push_found(item, status, action, None);
    }

    fn push_found(
        &mut self,
        item: Item,
        status: ItemStatus,
        action: Action,
        found: Option<String>,
    ) {
        self.items.push(ItemReport {
            item,
            status,
            action,
            found,
        });
    }
}

impl std::fmt::Display for ExecReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.nothing_to_do() {
            return writeln!(f, "nothing to do");
        }
        for i in &self.items {
            let verb = match (i.action, self.dry_run) {
                (Action::Keep, _) => "present",
                (Action::Create, false) => "created",
                (Action::Create, true) => "would create",
                (Action::Replace, false) => "replaced",
                (Action::Replace, true) => "would replace",
                (Action::Check, _) => "would check",
            };
            match (&i.found, i.action, self.dry_run) {
                (Some(found), Action::Replace, true) => writeln!(
                    f,
                    "{verb}: {} (found {found}; replacing it needs --yes)",
                    i.item
                )?,
                (Some(found), Action::Replace, false) => {
                    writeln!(f, "{verb}: {} (found {found})", i.item)?
                }
                (Some(found), _, _) => writeln!(f, "{verb}: {} ({found})", i.item)?,
                (None, _, _) => writeln!(f, "{verb}: {}", i.item)?,
            }
        }
        Ok(())
    }
}

/// The mounted installed system, for the steps that follow (payload,
/// bootloader). Mounts are released before loop devices.
#[derive(Debug)]
pub struct MountedTarget {
    root: PathBuf,
    /// Every ESP of the plan, the first being the one [`Self::open_esp`]
    /// opens.
    esps: Vec<EspLocation>,
    /// Block device (or loop device) of each whole disk, by plan key.
    disks: BTreeMap<String, PathBuf>,
    /// Partition node of each planned partition, by plan key.
    nodes: BTreeMap<String, PathBuf>,
    mounts: MountStack,
    loops: Vec<LoopGuard>,
}

impl MountedTarget {
    /// Where the installed system's `/` is mounted.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The ESP's location, if the plan has one.
    pub fn esp_location(&self) -> Option<&EspLocation> {
        self.esps.first()
    }

    /// Every ESP's location (one per disk in a mirrored install).
    pub fn esp_locations(&self) -> &[EspLocation] {
        &self.esps
    }

    /// Opens the ESP to write files (userspace FAT; it is not mounted).
    pub fn open_esp(&self) -> Result<Esp, EspError> {
        match self.esps.first() {
            Some(loc) => Esp::open(loc),
            None => Err(EspError::Fat {
                path: "/".into(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "the plan has no ESP"),
            }),
        }
    }

    /// The whole-disk block device for a plan device key (the loop device for
    /// an image): what `grub-install` must be given, never the image.
    pub fn disk_device(&self, key: &str) -> Option<&Path> {
        self.disks.get(key).map(PathBuf::as_path)
    }

    /// The partition device node for a plan partition key (`/dev/sda2`).
    pub fn partition_device(&self, key: &str) -> Option<&Path> {
        self.nodes.get(key).map(PathBuf::as_path)
    }

    /// Mount points, in mount order.
    pub fn mount_points(&self) -> Vec<PathBuf> {
        self.mounts.targets()
    }

    /// Unmounts everything (reverse order), then detaches loop devices.
    pub fn close(mut self) -> Result<()> {
        let mounts = std::mem::take(&mut self.mounts);
        let mut result = mounts.close().context("unmounting the target tree");
        for l in std::mem::take(&mut self.loops).into_iter().rev() {
            let r = l.close().context("detaching a loop device");
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// The result of [`execute`].
#[derive(Debug)]
pub struct Execution {
    pub report: ExecReport,
    /// The plan as executed: filesystems that were kept carry their on-disk
    /// UUIDs (also in the mounts), so fstab and the bootloader must use this
    /// plan, not the one given.
    pub plan: DiskPlan,
    /// Present when `mount_at` was given and this was not a dry run.
    pub mounted: Option<MountedTarget>,
}

/// What inspection found on one device.
#[derive(Debug, Clone)]
pub struct DeviceInspection {
    pub target: TargetInfo,
    pub table: ItemStatus,
    /// What the table found is, when it is not the plan's (for the report).
    pub table_found: Option<String>,
    /// Per partition number with a filesystem.
    pub filesystems: BTreeMap<u32, ItemStatus>,
    /// Per partition number of a further raid member: present when it
    /// holds the first member's btrfs.
    pub members: BTreeMap<u32, ItemStatus>,
    /// What each partition with a planned filesystem holds (only when the
    /// table is the plan's; otherwise the partitions are new).
    pub contents: BTreeMap<u32, Contents>,
    /// The report's `found` text per partition number: what a conflict is,
    /// or the UUID of a kept filesystem when it is not the planned one.
    pub found: BTreeMap<u32, String>,
}

impl DeviceInspection {
    fn found(&self, p: &PartitionPlan) -> Option<String> {
        self.found.get(&p.number).cloned()
    }
}

fn open_read(path: &Path) -> Result<File> {
    File::open(path).with_context(|| format!("opening {} to inspect it", path.display()))
}

/// Checks the target of every device and looks at what is on it. Writes
/// nothing. A filesystem of the planned kind counts as present (whatever its
/// UUID), an empty partition as missing, anything else as conflicting.
pub fn inspect(plan: &DiskPlan, targets: &TargetMap) -> Result<Vec<DeviceInspection>> {
    inspect_with(plan, targets, false)
}

/// [`inspect`]; with `reformat`, filesystems of the planned kind conflict too.
fn inspect_with(
    plan: &DiskPlan,
    targets: &TargetMap,
    reformat: bool,
) -> Result<Vec<DeviceInspection>> {
    let mut out = Vec::new();
    for dev in &plan.devices {
        let Some(path) = targets.get(&dev.key) else {
            bail!(
                "no target for device {}: pass --disk {}=TARGET (a block device or an image file)",
                dev.key,
                dev.key
            );
        };
        let target = blockdev::check_target(path, dev.size)?;
        let mut file = open_read(path)?;
        let found = partition::read_table(&mut file)
            .with_context(|| format!("reading the partition table of {}", path.display()))?;
        // No table: a whole-disk filesystem, LUKS or LVM (or any data) is
        // still something a new table overwrites.
        let whole = if found == FoundTable::None {
            let size = partition::device_size(&mut file)
                .with_context(|| format!("reading the size of {}", path.display()))?;
            fs::examine(&mut file, 0, size)
                .with_context(|| format!("examining {}", path.display()))?
        } else {
            Contents::Empty
        };
        let (table, table_found) = match &found {
            FoundTable::None if whole == Contents::Empty => (ItemStatus::Missing, None),
            FoundTable::None => (ItemStatus::Conflicting, Some(whole.to_string())),
            f if f.matches(dev) => (ItemStatus::Present, None),
            FoundTable::Gpt { .. } => (
                ItemStatus::Conflicting,
                Some("a gpt table with other partitions".to_string()),
            ),
            FoundTable::Msdos { .. } => (
                ItemStatus::Conflicting,
                Some("an msdos table with other partitions".to_string()),
            ),
        };
        let mut filesystems = BTreeMap::new();
        let mut contents = BTreeMap::new();
        let mut found_text = BTreeMap::new();
        let mut members = BTreeMap::new();
        for p in &dev.partitions {
            if p.member_of.is_some() {
                if table != ItemStatus::Present {
                    members.insert(p.number, ItemStatus::Missing);
                    continue;
                }
                let c = fs::examine(&mut file, p.start, p.size)
                    .with_context(|| format!("examining {} on {}", p.key, path.display()))?;
                // Decided below, against the first member.
                members.insert(
                    p.number,
                    if c == Contents::Empty {
                        ItemStatus::Missing
                    } else {
                        ItemStatus::Conflicting
                    },
                );
                contents.insert(p.number, c);
                continue;
            }
            let Some(want) = &p.filesystem else { continue };
            if table != ItemStatus::Present {
                filesystems.insert(p.number, ItemStatus::Missing);
                continue;
            }
            let c = fs::examine(&mut file, p.start, p.size)
                .with_context(|| format!("examining {} on {}", p.key, path.display()))?;
            let status = match &c {
                Contents::Empty => ItemStatus::Missing,
                Contents::Filesystem(f) if f.kind == want.kind && !reformat => {
                    if !f.uuid.eq_ignore_ascii_case(&want.uuid) {
                        found_text.insert(p.number, format!("kept, UUID {}", f.uuid));
                    }
                    ItemStatus::Present
                }
                _ => {
                    found_text.insert(p.number, c.to_string());
                    ItemStatus::Conflicting
                }
            };
            filesystems.insert(p.number, status);
            contents.insert(p.number, c);
        }
        out.push(DeviceInspection {
            target,
            table,
            table_found,
            filesystems,
            members,
            contents,
            found: found_text,
        });
    }
    judge_raids(plan, &mut out);
    Ok(out)
}

/// A multi-device btrfs is present only when every member holds it (the
/// first member's filesystem UUID on each); a member holding it is present
/// then. Anything else is a conflict: making the filesystem again over all
/// members overwrites what they hold, which needs consent.
fn judge_raids(plan: &DiskPlan, ins: &mut [DeviceInspection]) {
    // (device index, partition number) of each partition key.
    let at: BTreeMap<&str, (usize, u32)> = plan
        .devices
        .iter()
        .enumerate()
        .flat_map(|(i, d)| {
            d.partitions
                .iter()
                .map(move |p| (p.key.as_str(), (i, p.number)))
        })
        .collect();
    for (first, raid) in plan.raids() {
        let Some(&(fd, fnum)) = at.get(first.key.as_str()) else {
            continue;
        };
        let first_uuid = match (ins[fd].filesystems.get(&fnum), ins[fd].contents.get(&fnum)) {
            (Some(ItemStatus::Present), Some(Contents::Filesystem(f))) => Some(f.uuid.clone()),
            _ => None,
        };
        let mut all_hold = first_uuid.is_some();
        for m in raid.devices.iter().filter(|m| **m != first.key) {
            let Some(&(md, mnum)) = at.get(m.as_str()) else {
                continue;
            };
            let holds = matches!(
                (&first_uuid, ins[md].contents.get(&mnum)),
                (Some(u), Some(Contents::Filesystem(f)))
                    if f.kind == FsKind::Btrfs && f.uuid.eq_ignore_ascii_case(u)
            );
            if holds {
                ins[md].members.insert(mnum, ItemStatus::Present);
                ins[md].found.remove(&mnum);
            } else {
                all_hold = false;
                if let Some(c) = ins[md]
                    .contents
                    .get(&mnum)
                    .filter(|c| **c != Contents::Empty)
                {
                    let text = c.to_string();
                    ins[md].found.insert(mnum, text);
                }
            }
        }
        if first_uuid.is_some() && !all_hold {
            // The kept filesystem does not span every member: remade.
            ins[fd].filesystems.insert(fnum, ItemStatus::Conflicting);
            ins[fd].found.insert(
                fnum,
                format!(
                    "a btrfs that does not span all of {}",
                    raid.devices.join(", ")
                ),
            );
            for m in raid.devices.iter().filter(|m| **m != first.key) {
                if let Some(&(md, mnum)) = at.get(m.as_str()) {
                    if ins[md].members.get(&mnum) == Some(&ItemStatus::Present) {
                        ins[md].members.insert(mnum, ItemStatus::Conflicting);
                    }
                }
            }
        }
    }
}

fn action_for(status: ItemStatus) -> Action {
    match status {
        ItemStatus::Present => Action::Keep,
        ItemStatus::Missing => Action::Create,
        ItemStatus::Conflicting => Action::Replace,
        ItemStatus::Unchecked => Action::Check,
    }
}

/// Resources held while executing; mounts drop before loop devices.
#[derive(Default)]
struct Held {
    mounts: MountStack,
    loops: Vec<LoopGuard>,
    disks: BTreeMap<String, PathBuf>,
    nodes: BTreeMap<String, PathBuf>,
}

impl Held {
    fn close(mut self) -> Result<()> {
        std::mem::take(&mut self.mounts)
            .close()
            .context("unmounting")?;
        while let Some(l) = self.loops.pop() {
            l.close().context("detaching a loop device")?;
        }
        Ok(())
    }
}

/// The plan with every kept filesystem's on-disk UUID in place of the
/// planned one, in its partition and in its mounts.
fn adopt(plan: &DiskPlan, inspections: &[DeviceInspection]) -> DiskPlan {
    let mut out = plan.clone();
    let mut adopted: BTreeMap<String, String> = BTreeMap::new();
    for (dev, ins) in out.devices.iter_mut().zip(inspections) {
        for p in &mut dev.partitions {
            let (Some(fsp), Some(Contents::Filesystem(f))) =
                (p.filesystem.as_mut(), ins.contents.get(&p.number))
            else {
                continue;
            };
            if ins.filesystems.get(&p.number) == Some(&ItemStatus::Present) {
                fsp.uuid = f.uuid.clone();
                adopted.insert(p.key.clone(), f.uuid.clone());
            }
        }
    }
    for m in &mut out.mounts {
        if let Some(u) = adopted.get(&m.partition) {
            m.uuid = u.clone();
        }
    }
    out
}

/// Runs the disk phase: safety checks, inspection, then only the missing
/// items. See [`ExecOptions`] for consent, dry run and mounting. The
/// returned [`Execution::plan`] has the UUIDs of the filesystems kept.
pub fn execute(plan: &DiskPlan, targets: &TargetMap, opts: &ExecOptions) -> Result<Execution> {
    let inspections = inspect_with(plan, targets, opts.reformat)?;
    let plan = &adopt(plan, &inspections);

    // Consent: writing a partition table or replacing what is on a partition.
    for (dev, ins) in plan.devices.iter().zip(&inspections) {
        let what = if ins.table != ItemStatus::Present {
            Some(match &ins.table_found {
                Some(found) => format!("{} ({found})", dev.key),
                None => format!("the partition table of {}", dev.key),
            })
        } else {
            dev.partitions
                .iter()
                .find(|p| {
                    ins.filesystems.get(&p.number) == Some(&ItemStatus::Conflicting)
                        || (ins.members.get(&p.number) == Some(&ItemStatus::Conflicting)
                            && ins.contents.get(&p.number) != Some(&Contents::Empty))
                })
                .map(|p| {
                    let found = ins.found(p).unwrap_or_else(|| {
                        ins.contents
                            .get(&p.number)
                            .map_or_else(|| "data".to_string(), ToString::to_string)
                    });
                    format!("{} ({found})", p.key)
                })
        };
        if let (Some(what), false, false) = (what, opts.consent, opts.dry_run) {
            return Err(SafetyError::NoConsent {
                path: ins.target.path.clone(),
                what,
            }
            .into());
        }
    }

    if opts.dry_run {
        return Ok(Execution {
            report: dry_report(plan, &inspections),
            plan: plan.clone(),
            mounted: None,
        });
    }

    let mut report = ExecReport::default();
    let mut held = Held::default();
    let mut written: Vec<(PathBuf, bool)> = Vec::new();
    let result = apply(
        plan,
        &inspections,
        opts,
        &mut held,
        &mut written,
        &mut report,
    );
    match result {
        Ok(()) => {
            let mounted = match &opts.mount_at {
                Some(root) => Some(MountedTarget {
                    root: root.clone(),
                    esps: plan
                        .esps()
                        .into_iter()
                        .map(|(d, p)| EspLocation {
                            disk: targets[&d.key].clone(),
                            start: p.start,
                            size: p.size,
                        })
                        .collect(),
                    disks: std::mem::take(&mut held.disks),
                    nodes: std::mem::take(&mut held.nodes),
                    mounts: std::mem::take(&mut held.mounts),
                    loops: std::mem::take(&mut held.loops),
                }),
                None => {
                    held.close()?;
                    None
                }
            };
            Ok(Execution {
                report,
                plan: plan.clone(),
                mounted,
            })
        }
        Err(e) => {
            drop(held);
            let mut e = e;
            for (path, is_block) in written {
                match wipe(&path, is_block) {
                    Ok(()) => {
                        e = e.context(format!(
                            "the partition table written to {} was wiped again",
                            path.display()
                        ))
                    }
                    Err(w) => {
                        tracing::error!(error = %format!("{w:#}"), "wiping the half-written disk");
                    }
                }
            }
            Err(e)
        }
    }
}

fn wipe(path: &Path, is_block: bool) -> Result<()> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {} to wipe its partition table", path.display()))?;
    partition::wipe_table(&mut f)?;
    f.sync_all()?;
    if is_block {
        let _ = blockdev::reread_partitions(&f);
    }
    Ok(())
}

fn dry_report(plan: &DiskPlan, inspections: &[DeviceInspection]) -> ExecReport {
    let mut report = ExecReport {
        dry_run: true,
        items: Vec::new(),
    };
    for (dev, ins) in plan.devices.iter().zip(inspections) {
        report.push_found(
            Item::PartitionTable {
                device: dev.key.clone(),
            },
            ins.table,
            action_for(ins.table),
            ins.table_found.clone(),
        );
        for p in &dev.partitions {
            push_member(&mut report, p, ins);
            let Some(fsp) = &p.filesystem else { continue };
            let st = ins.filesystems[&p.number];
            report.push_found(
                Item::Filesystem {
                    partition: p.key.clone(),
                    fstype: fsp.kind,
                },
                st,
                action_for(st),
                ins.found(p),
            );
            let sub = if st == ItemStatus::Present {
                ItemStatus::Unchecked
            } else {
                ItemStatus::Missing
            };
            for sv in &fsp.subvolumes {
                report.push(
                    Item::Subvolume {
                        partition: p.key.clone(),
                        name: sv.name.clone(),
                    },
                    sub,
                    action_for(sub),
                );
            }
        }
    }
    report
}

fn apply(
    plan: &DiskPlan,
    inspections: &[DeviceInspection],
    opts: &ExecOptions,
    held: &mut Held,
    written: &mut Vec<(PathBuf, bool)>,
    report: &mut ExecReport,
) -> Result<()> {
    // Every table and partition node first: a mirror's mkfs needs the
    // members on every disk.
    for (dev, ins) in plan.devices.iter().zip(inspections) {
        crate::interrupt::check()?;
        prepare_device(dev, ins, opts, held, written, report)
            .with_context(|| format!("preparing {} ({})", dev.key, ins.target.path.display()))?;
    }
    for (dev, ins) in plan.devices.iter().zip(inspections) {
        make_filesystems(plan, dev, ins, held, report).with_context(|| {
            format!(
                "making the filesystems of {} ({})",
                dev.key,
                ins.target.path.display()
            )
        })?;
    }
    if let Some(root) = &opts.mount_at {
        crate::interrupt::check()?;
        mount_tree(plan, root, held)?;
    }
    Ok(())
}

fn prepare_device(
    dev: &DevicePlan,
    ins: &DeviceInspection,
    opts: &ExecOptions,
    held: &mut Held,
    written: &mut Vec<(PathBuf, bool)>,
    report: &mut ExecReport,
) -> Result<()> {
    let path = &ins.target.path;
    let is_block = matches!(ins.target.kind, TargetKind::BlockDevice { .. });

    report.push_found(
        Item::PartitionTable {
            device: dev.key.clone(),
        },
        ins.table,
        action_for(ins.table),
        ins.table_found.clone(),
    );
    if ins.table != ItemStatus::Present {
        let mut opts_rw = OpenOptions::new();
        opts_rw.read(true).write(true);
        if is_block {
            // The kernel refuses O_EXCL while anything uses the disk.
            opts_rw.custom_flags(libc::O_EXCL);
        }
        let mut f = opts_rw
            .open(path)
            .with_context(|| format!("opening {} for writing", path.display()))?;
        written.push((path.clone(), is_block));
        partition::write_table(&mut f, dev).context("writing the partition table")?;
    }

    // Does anything need the partitions as block devices?
    let needs_nodes = dev.partitions.iter().any(|p| {
        p.member_of.is_some()
            || p.filesystem
                .as_ref()
                .is_some_and(|f| f.kind != FsKind::Vfat)
    });
    if needs_nodes {
        let (disk_path, disk_name) = match &ins.target.kind {
            TargetKind::BlockDevice { name } => (path.clone(), name.clone()),
            TargetKind::ImageFile => {
                let l = LoopGuard::attach(path)
                    .with_context(|| format!("attaching {} to a loop device", path.display()))?;
                let p = l.path().to_path_buf();
                let n = l.name();
                held.loops.push(l);
                (p, n)
            }
        };
        let disk =
            File::open(&disk_path).with_context(|| format!("opening {}", disk_path.display()))?;
        let parts: Vec<(u32, u64, u64)> = dev
            .partitions
            .iter()
            .map(|p| (p.number, p.start, p.size))
            .collect();
        let nodes = blockdev::expose_partitions(&disk, &disk_name, &parts, opts.node_timeout)?;
        for n in nodes {
            if let Some(p) = dev.partitions.iter().find(|p| p.number == n.number) {
                held.nodes.insert(p.key.clone(), n.path.clone());
            }
            if n.created {
                if let Some(l) = held.loops.last_mut().filter(|_| !is_block) {
                    l.own_node(n.path);
                }
            }
        }
        held.disks.insert(dev.key.clone(), disk_path);
    } else {
        held.disks.insert(dev.key.clone(), path.clone());
    }
    Ok(())
}

/// Reports `p` when it is a further raid member; its first member's key.
fn push_member<'a>(
    report: &mut ExecReport,
    p: &'a PartitionPlan,
    ins: &DeviceInspection,
) -> Option<&'a String> {
    let (of, st) = (p.member_of.as_ref()?, *ins.members.get(&p.number)?);
    report.push_found(
        Item::RaidMember {
            partition: p.key.clone(),
            filesystem: of.clone(),
        },
        st,
        action_for(st),
        ins.found(p),
    );
    Some(of)
}

fn make_filesystems(
    plan: &DiskPlan,
    dev: &DevicePlan,
    ins: &DeviceInspection,
    held: &Held,
    report: &mut ExecReport,
) -> Result<()> {
    let path = &ins.target.path;
    for p in &dev.partitions {
        // Made (or kept) with its first member, which comes earlier in the
        // report when on an earlier disk.
        if let Some(of) = push_member(report, p, ins) {
            let first_made = plan
                .partition(of)
                .and_then(|(d, fp)| (d.key != dev.key || fp.number < p.number).then_some(()));
            if first_made.is_none() {
                bail!("{}: its first member {of} is not laid out before it", p.key);
            }
        }
        let Some(fsp) = &p.filesystem else { continue };
        crate::interrupt::check()?;
        let st = ins.filesystems[&p.number];
        report.push_found(
            Item::Filesystem {
                partition: p.key.clone(),
                fstype: fsp.kind,
            },
            st,
            action_for(st),
            ins.found(p),
        );
        if let Some(raid) = &fsp.raid {
            let nodes = raid
                .devices
                .iter()
                .map(|m| {
                    held.nodes
                        .get(m)
                        .cloned()
                        .with_context(|| format!("no device node for raid member {m}"))
                })
                .collect::<Result<Vec<_>>>()?;
            if st != ItemStatus::Present {
                fs::mkfs_multi(&nodes, fsp, raid.profile.name()).with_context(|| {
                    format!(
                        "making a {} btrfs over {}",
                        raid.profile.name(),
                        raid.devices.join(", ")
                    )
                })?;
            }
            // The kernel must know every member before a mount.
            btrfs::scan(&nodes).context("registering the raid members with the kernel")?;
        } else if st != ItemStatus::Present {
            make_fs(path, p, held)?;
        }
        if fsp.kind == FsKind::Btrfs {
            subvolumes(p, held, report)?;
        }
    }
    Ok(())
}

fn node<'a>(held: &'a Held, p: &PartitionPlan) -> Result<&'a Path> {
    held.nodes
        .get(&p.key)
        .map(PathBuf::as_path)
        .with_context(|| format!("no device node for {}", p.key))
}

fn make_fs(disk: &Path, p: &PartitionPlan, held: &Held) -> Result<()> {
    let Some(fsp) = &p.filesystem else {
        return Ok(());
    };
    match fsp.kind {
        FsKind::Vfat => esp::format(
            &EspLocation {
                disk: disk.to_path_buf(),
                start: p.start,
                size: p.size,
            },
            &fsp.uuid,
            fsp.label.as_deref(),
        )
        .with_context(|| format!("formatting the ESP {}", p.key))?,
        _ => {
            let n = node(held, p)?;
            fs::mkfs(n, fsp).with_context(|| {
                format!(
                    "making {} on {} ({})",
                    fsp.kind.as_str(),
                    p.key,
                    n.display()
                )
            })?
        }
    }
    Ok(())
}

fn temp_mountpoint(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("creating a temporary mount point")
}

/// Mounts the top level read-only to look, and read-write only when
/// something must be created.
fn subvolumes(p: &PartitionPlan, held: &Held, report: &mut ExecReport) -> Result<()> {
    let Some(fsp) = &p.filesystem else {
        return Ok(());
    };
    let dev = node(held, p)?;
    let dir = temp_mountpoint("opdbus-btrfs-")?;
    let top = dir.path();
    let ro = MountGuard::mount(dev, top, "btrfs", "subvolid=5,ro")?;
    if let Some(raid) = &fsp.raid {
        let found = btrfs::profiles(top).context("reading the btrfs profiles")?;
        let wrong: Vec<String> = found
            .iter()
            .filter(|(kind, profile)| {
                matches!(kind.as_str(), "Data" | "Metadata")
                    && !profile.eq_ignore_ascii_case(raid.profile.name())
            })
            .map(|(k, pr)| format!("{k} {pr}"))
            .collect();
        if !wrong.is_empty() {
            bail!(
                "{}: the btrfs kept there has {} where the plan mirrors data and metadata as {}; \
                 convert it (btrfs balance start -dconvert={p} -mconvert={p}) or re-run with --reformat --yes",
                p.key,
                wrong.join(", "),
                raid.profile.name(),
                p = raid.profile.name()
            );
        }
    }
    let mut states = Vec::new();
    for sv in &fsp.subvolumes {
        let st = btrfs::subvolume_state(top, &sv.name);
        if st == SubvolState::NotASubvolume {
            bail!(
                "{}: '{}' exists on the filesystem but is not a subvolume; move it away or re-run with --yes after wiping the disk",
                p.key,
                sv.name
            );
        }
        states.push(st);
    }
    let default_ok = match &fsp.default_subvolume {
        None => true,
        Some(name) => {
            let want = btrfs::subvolume_id(top, name);
            want.is_some() && btrfs::default_subvolume_id(top).ok() == want
        }
    };
    let busy = states.iter().any(|s| *s != SubvolState::Present) || !default_ok;
    ro.close()?;
    let rw = if busy {
        Some(MountGuard::mount(dev, top, "btrfs", "subvolid=5")?)
    } else {
        None
    };
    for (sv, st) in fsp.subvolumes.iter().zip(states) {
        let item = Item::Subvolume {
            partition: p.key.clone(),
            name: sv.name.clone(),
        };
        if st == SubvolState::Present {
            report.push(item, ItemStatus::Present, Action::Keep);
        } else {
            btrfs::create_subvolume(top, sv)?;
            report.push(item, ItemStatus::Missing, Action::Create);
        }
    }
    if let Some(name) = &fsp.default_subvolume {
        let item = Item::DefaultSubvolume {
            partition: p.key.clone(),
            name: name.clone(),
        };
        if default_ok {
            report.push(item, ItemStatus::Present, Action::Keep);
        } else {
            btrfs::set_default(top, name)?;
            report.push(item, ItemStatus::Missing, Action::Create);
        }
    }
    if let Some(rw) = rw {
        rw.close()?;
    }
    Ok(())
}

fn mount_tree(plan: &DiskPlan, root: &Path, held: &mut Held) -> Result<()> {
    for m in &plan.mounts {
        let rel = m.path.strip_prefix("/").unwrap_or(&m.path);
        let target = root.join(rel);
        if m.fstype == FsKind::Vfat {
            // No vfat in every kernel: the ESP is written through `Esp`.
            std::fs::create_dir_all(&target)
                .with_context(|| format!("creating {}", target.display()))?;
            continue;
        }
        let dev = held
            .nodes
            .get(&m.partition)
            .cloned()
            .with_context(|| format!("no device node for {}", m.partition))?;
        let g = MountGuard::mount(&dev, &target, m.fstype.as_str(), &m.option_string())?;
        held.mounts.push(g);
    }
    Ok(())
}
