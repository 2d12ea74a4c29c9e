//! Extraction benchmark (root only): the installer's streaming extractor
//! against `tar --zstd -xpf` on the same payload, into fresh directories on
//! a tmpfs and on a loop-backed btrfs, plus the extractor's peak memory.
//!
//! Payload: `OPDBUS_BENCH_PAYLOAD`, else the newest cached real payload in
//! `OPDBUS_CACHE` / `target/opdbus-cache/`, else a synthetic ~200 MB tar.zst.
//! The extractor runs in a child process (`extract-child` mode of this binary)
//! so its VmHWM is its own.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use opdbus_common::Task;
use opdbus_installer::payload::{extract_payload, sha256sum_line, sidecar_path, ExpectedSha256};

const ROUNDS: usize = 5;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.first().map(String::as_str) == Some("extract-child") {
        child(Path::new(&args[1]), Path::new(&args[2]));
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("extract bench: skipped (needs root: mounts, device nodes, ownership)");
        return;
    }
    let work = tempfile::Builder::new()
        .prefix("opdbus-bench-")
        .tempdir()
        .unwrap();
    let payload = find_payload().unwrap_or_else(|| synthetic_payload(work.path()));
    let size = fs::metadata(&payload).unwrap().len();
    println!(
        "payload: {} ({:.1} MB compressed)",
        payload.display(),
        mb(size)
    );
    // Warm the page cache so both tools read the payload from memory.
    fs::read(&payload).unwrap();

    let tmpfs = Mount::tmpfs(&work.path().join("tmpfs"));
    run_on("tmpfs", &tmpfs.dir, &payload);
    drop(tmpfs);
    match Mount::btrfs_loop(work.path()) {
        Ok(btrfs) => run_on("btrfs (loop)", &btrfs.dir, &payload),
        Err(e) => println!("btrfs (loop): skipped: {e}"),
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn run_on(label: &str, fs_dir: &Path, payload: &Path) {
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let (mut ours_cpu, mut theirs_cpu) = (Vec::new(), Vec::new());
    let mut unpacked = 0;
    let mut hwm = 0;
    for round in 0..ROUNDS {
        let t_dir = fs_dir.join(format!("tar-{round}"));
        fs::create_dir_all(&t_dir).unwrap();
        sync();
        let c0 = children_cpu();
        let t0 = Instant::now();
        Task::new("tar")
            .args(["--zstd", "-xpf"])
            .arg(payload)
            .arg("-C")
            .arg(&t_dir)
            .run()
            .unwrap();
        theirs.push(t0.elapsed());
        theirs_cpu.push(children_cpu() - c0);

        let o_dir = fs_dir.join(format!("ours-{round}"));
        sync();
        let c0 = children_cpu();
        let t0 = Instant::now();
        let out = Command::new(std::env::current_exe().unwrap())
            .arg("extract-child")
            .arg(payload)
            .arg(&o_dir)
            .output()
            .unwrap();
        ours.push(t0.elapsed());
        ours_cpu.push(children_cpu() - c0);
        assert!(
            out.status.success(),
            "extractor failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for word in text.split_whitespace() {
            if let Some(v) = word.strip_prefix("unpacked=") {
                unpacked = v.parse().unwrap();
            }
            if let Some(v) = word.strip_prefix("vmhwm_kib=") {
                hwm = hwm.max(v.parse::<u64>().unwrap());
            }
        }
        fs::remove_dir_all(&t_dir).unwrap();
        fs::remove_dir_all(&o_dir).unwrap();
    }
    let best = |v: &[Duration]| v.iter().min().copied().unwrap();
    let (o, t) = (best(&ours), best(&theirs));
    let min_cpu = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let rate = |d: Duration| mb(unpacked) / d.as_secs_f64();
    println!(
        "{label}: {:.1} MB unpacked, best of {ROUNDS}: installer {:.2} s = {:.0} MB/s, \
         tar --zstd -xpf {:.2} s = {:.0} MB/s, ratio {:.0}% (target >= 90%), \
         installer peak memory {:.1} MiB (target < 64 MiB)",
        mb(unpacked),
        o.as_secs_f64(),
        rate(o),
        t.as_secs_f64(),
        rate(t),
        100.0 * t.as_secs_f64() / o.as_secs_f64(),
        hwm as f64 / 1024.0,
    );
    println!(
        "{label}: CPU time (user+sys, best): installer {:.2} s, tar+zstd {:.2} s; load average {}",
        min_cpu(&ours_cpu),
        min_cpu(&theirs_cpu),
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
    );
}

/// CPU seconds used by waited-for children (cutime + cstime of /proc/self/stat).
fn children_cpu() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: f64 = fields[13].parse::<f64>().unwrap() + fields[14].parse::<f64>().unwrap();
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    Task::new("getconf")
        .arg("CLK_TCK")
        .read()
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(100.0)
}

fn child(payload: &Path, target: &Path) {
    let report = extract_payload(payload, &ExpectedSha256::Sidecar, target, false).unwrap();
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("0");
    println!(
        "entries={} unpacked={} vmhwm_kib={hwm}",
        report.entries, report.unpacked_bytes
    );
}

fn sync() {
    Task::new("sync").run().unwrap();
}

fn find_payload() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OPDBUS_BENCH_PAYLOAD") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var_os("OPDBUS_CACHE").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/opdbus-cache"),
        PathBuf::from,
    );
    fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst") && sidecar_path(p).exists())
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
}

/// About 200 MB of tar.zst: 24,000 files of mixed compressible and random
/// content in a few hundred directories, some links.
fn synthetic_payload(dir: &Path) -> PathBuf {
    let path = dir.join("synthetic.tar.zst");
    println!("building a synthetic payload (no cached real payload found)");
    let file = fs::File::create(&path).unwrap();
    let enc = zstd::Encoder::new(file, 3).unwrap().auto_finish();
    let mut b = tar::Builder::new(enc);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut noise = |n: usize| {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.truncate(n);
        v
    };
    for i in 0..24_000u32 {
        let len = 4_000 + (i as usize * 7919) % 60_000;
        let mut data = noise(len / 3);
        data.extend(std::iter::repeat_n(b"usr/lib/x86_64-linux-gnu ", len / 25).flatten());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, format!("usr/d{}/f{i}", i % 400), &data[..])
            .unwrap();
        if i % 50 == 0 {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            b.append_link(&mut h, format!("usr/d{}/l{i}", i % 400), format!("f{i}"))
                .unwrap();
        }
    }
    b.into_inner().unwrap();
    let (sha, _) = opdbus_installer::payload::build::hash_file(&path).unwrap();
    fs::write(sidecar_path(&path), sha256sum_line(&sha, &path)).unwrap();
    path
}

/// A scratch filesystem mounted for the benchmark; unmounted (and its loop
/// device detached) on drop.
struct Mount {
    dir: PathBuf,
    loopdev: Option<String>,
}

impl Mount {
    fn tmpfs(dir: &Path) -> Mount {
        fs::create_dir_all(dir).unwrap();
        Task::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8g", "opdbus-bench"])
            .arg(dir)
            .run()
            .unwrap();
        Mount {
            dir: dir.to_path_buf(),
            loopdev: None,
        }
    }

    fn btrfs_loop(work: &Path) -> Result<Mount, opdbus_common::TaskError> {
        let image = work.join("btrfs.img");
        fs::File::create(&image).unwrap().set_len(8 << 30).unwrap();
        let dev = Task::new("losetup")
            .args(["-f", "--show"])
            .arg(&image)
            .read()?;
        let m = Mount {
            dir: work.join("btrfs"),
            loopdev: Some(dev.trim().to_string()),
        };
        Task::new("mkfs.btrfs").args(["-q", dev.trim()]).run()?;
        fs::create_dir_all(&m.dir).unwrap();
        Task::new("mount").arg(dev.trim()).arg(&m.dir).run()?;
        Ok(m)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Task::new("umount").arg(&self.dir).run();
        if let Some(dev) = &self.loopdev {
            let _ = Task::new("losetup").args(["-d", dev]).run();
        }
    }
}
