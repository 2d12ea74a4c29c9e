//! Container creation on a loop-backed btrfs: `container create` (btrfs
//! snapshot + LXC config + ownership record) against a full copy of the
//! same template (`cp -a`), and create + start (`lxc-start -d`, no network).
//! Medians of the same run, with ratios. Targets: create <= 50 ms, create +
//! start <= 250 ms. Needs root (loop device, LXC); skips otherwise.
//! `cargo bench --bench containers`.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use opdbus_agent::engine::ownership::Ownership;
use opdbus_agent::lxc::{container, runner, template, Paths, Spec};
use opdbus_common::Task;

const RUNS: usize = 11;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A busybox-static tree plus zoneinfo (a few thousand small files), so a
/// copy has real work to do.
fn template_tree(dir: &Path) -> std::path::PathBuf {
    let r = dir.join("tree");
    for d in [
        "bin",
        "sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "usr/share",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap();
    std::os::unix::fs::symlink("busybox", r.join("bin/sleep")).unwrap();
    std::os::unix::fs::symlink("../bin/busybox", r.join("sbin/init")).unwrap();
    std::fs::write(r.join("etc/inittab"), "::respawn:/bin/sleep 2147483647\n").unwrap();
    let _ = Task::new("cp")
        .args(["-a", "/usr/share/zoneinfo"])
        .arg(r.join("usr/share/"))
        .run();
    r
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() || !Path::new("/usr/bin/lxc-start").exists() {
        println!("containers bench: skipped (needs root and LXC)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("btrfs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let dev = Task::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .read()
        .unwrap();
    let dev = dev.trim().to_string();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    Task::new("mkfs.btrfs").args(["-q", &dev]).run().unwrap();
    Task::new("mount").arg(&dev).arg(&mnt).run().unwrap();

    let result = std::panic::catch_unwind(|| run(dir.path(), &mnt));

    let lxc = mnt.join("lxc");
    if let Ok(entries) = std::fs::read_dir(&lxc) {
        for e in entries.flatten() {
            let _ = Command::new("lxc-stop")
                .arg("-k")
                .arg("-n")
                .arg(e.file_name())
                .arg("-P")
                .arg(&lxc)
                .output();
        }
    }
    let _ = Command::new("umount").arg(&mnt).status();
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    if let Ok(hier) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in hier.flatten() {
            let _ = std::fs::remove_dir(h.path().join("lxc.pivot"));
        }
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

fn run(tmp: &Path, mnt: &Path) {
    let paths = Paths::new(mnt.join("layout"), mnt.join("lxc"));
    let owners = Ownership::new(tmp.join("state"));
    let tree = template_tree(tmp);
    template::create(&paths, "bench", &tree).unwrap();
    let tpl = template::get(&paths, "bench").unwrap();
    let size = Task::new("du")
        .args(["-sm"])
        .arg(tpl.rootfs_path())
        .read()
        .unwrap();
    let spec = |name: String| Spec {
        name,
        template: "bench".into(),
        network: None,
        memory: Some(128 << 20),
        cpus: Some(1),
        autostart: false,
        unprivileged: false,
    };

    let mut snap = Vec::new();
    for i in 0..RUNS {
        let dst = mnt.join(format!("snap{i}"));
        let t = Instant::now();
        opdbus_agent::lxc::btrfs::snapshot(&tpl.rootfs_path(), &dst).unwrap();
        snap.push(t.elapsed());
        opdbus_agent::lxc::btrfs::delete(&dst).unwrap();
    }
    let snap = median(snap);
    let mut rec = Vec::new();
    for i in 0..RUNS {
        let t = Instant::now();
        owners
            .record("lxc", "bench", &format!("r{i}"), None)
            .unwrap();
        rec.push(t.elapsed());
    }
    let rec = median(rec);
    let mut create = Vec::new();
    let mut copy = Vec::new();
    let mut create_start = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for i in 0..RUNS {
        let t = Instant::now();
        container::create(&paths, &owners, &spec(format!("c{i}"))).unwrap();
        create.push(t.elapsed());

        let dst = mnt.join(format!("copy{i}"));
        let t = Instant::now();
        Task::new("cp")
            .args(["-a", "--reflink=never"])
            .arg(tpl.rootfs_path())
            .arg(&dst)
            .run()
            .unwrap();
        copy.push(t.elapsed());
        std::fs::remove_dir_all(&dst).unwrap();

        let name = format!("s{i}");
        let t = Instant::now();
        container::create(&paths, &owners, &spec(name.clone())).unwrap();
        rt.block_on(runner::start(None, &paths, &name)).unwrap();
        create_start.push(t.elapsed());
        container::delete(&paths, &owners, &name).unwrap();
        container::delete(&paths, &owners, &format!("c{i}")).unwrap();
    }
    let (create, copy, create_start) = (median(create), median(copy), median(create_start));
    println!(
        "containers bench: template {} MB, {RUNS} runs, medians:",
        size.split_whitespace().next().unwrap_or("?")
    );
    println!(
        "  container create (snapshot + config): {:7.1} ms (target <= 50 ms)",
        ms(create)
    );
    println!(
        "  of which the btrfs snapshot alone:    {:7.1} ms",
        ms(snap)
    );
    println!("  of which the ownership record:        {:7.1} ms", ms(rec));
    println!(
        "  full copy of the template (cp -a):    {:7.1} ms  ratio copy/create {:.1}x",
        ms(copy),
        copy.as_secs_f64() / create.as_secs_f64()
    );
    println!(
        "  create + start (lxc-start -d):        {:7.1} ms (target <= 250 ms)",
        ms(create_start)
    );
}
