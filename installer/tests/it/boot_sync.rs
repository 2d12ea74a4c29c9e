//! Kernel updates keep the boot menus current: `op-dbus-install boot-sync`
//! (what the /etc/kernel/post{inst,rm}.d hooks run) against a fake
//! installed system, and the same code on a FAT ESP written in user space.
//! Tier 1: no root, no mount.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cli_common;
use cli_common::*;
use opdbus_installer::bootloader::{self, BootConfig, BootSetup};
use opdbus_installer::disk::esp::{self, Esp, EspLocation};
use opdbus_installer::target::Root;

fn setup(systemd_boot: bool, grub_bios: bool) -> BootSetup {
    BootSetup {
        config: BootConfig {
            title: "node1".into(),
            cmdline: "root=UUID=u rootflags=subvol=@ rw console=ttyS0".into(),
            boot_fs_uuid: "u".into(),
            boot_dir_in_fs: "/@/boot".into(),
        },
        systemd_boot,
        grub_bios,
        esps: Vec::new(),
    }
}

fn fake_system(dir: &Path, s: &BootSetup) -> (PathBuf, PathBuf) {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("boot")).unwrap();
    let r = Root::open(&root).unwrap();
    r.write(
        bootloader::BOOT_SETUP,
        serde_json::to_vec(s).unwrap(),
        0o644,
    )
    .unwrap();
    r.write(bootloader::EFI_BINARY, b"MZ systemd-boot", 0o644)
        .unwrap();
    let esp = root.join("boot/efi");
    std::fs::create_dir_all(&esp).unwrap();
    (root, esp)
}

fn add_kernel(root: &Path, v: &str) {
    std::fs::write(
        root.join(format!("boot/vmlinuz-{v}")),
        format!("kernel {v}"),
    )
    .unwrap();
    std::fs::write(
        root.join(format!("boot/initrd.img-{v}")),
        format!("initrd {v}"),
    )
    .unwrap();
}

fn remove_kernel(root: &Path, v: &str) {
    std::fs::remove_file(root.join(format!("boot/vmlinuz-{v}"))).unwrap();
    std::fs::remove_file(root.join(format!("boot/initrd.img-{v}"))).unwrap();
}

/// Every file below `dir` with its contents.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn boot_sync(root: &Path, esp: &Path) {
    let out = run(&[
        "boot-sync".as_ref(),
        "--root".as_ref(),
        root.as_os_str(),
        "--esp".as_ref(),
        esp.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn a_new_kernel_becomes_the_default_and_a_removed_one_leaves_the_menus() {
    let dir = tempfile::tempdir().unwrap();
    let (root, esp) = fake_system(dir.path(), &setup(true, true));
    add_kernel(&root, "6.1.0-10-amd64");
    boot_sync(&root, &esp);
    assert_eq!(
        read(&esp.join("loader/loader.conf")).lines().next(),
        Some("default opdbus-6.1.0-10-amd64.conf")
    );
    assert_eq!(
        read(&esp.join("opdbus/6.1.0-10-amd64/linux")),
        "kernel 6.1.0-10-amd64"
    );

    // apt installs a newer kernel: it is the default, the old one stays.
    add_kernel(&root, "6.1.0-11-amd64");
    boot_sync(&root, &esp);
    assert_eq!(
        read(&esp.join("loader/loader.conf")).lines().next(),
        Some("default opdbus-6.1.0-11-amd64.conf")
    );
    let entries = std::fs::read_dir(esp.join("loader/entries"))
        .unwrap()
        .count();
    assert_eq!(entries, 2);
    let entry = read(&esp.join("loader/entries/opdbus-6.1.0-11-amd64.conf"));
    assert!(
        entry.contains("linux   /opdbus/6.1.0-11-amd64/linux\n"),
        "{entry}"
    );
    assert!(entry.contains("options root=UUID=u rootflags=subvol=@ rw console=ttyS0\n"));
    assert_eq!(
        read(&esp.join("opdbus/6.1.0-11-amd64/initrd")),
        "initrd 6.1.0-11-amd64"
    );
    let grub = read(&root.join("boot/grub/grub.cfg"));
    let first = grub.find("6.1.0-11-amd64").unwrap();
    assert!(first < grub.find("6.1.0-10-amd64").unwrap(), "{grub}");

    // apt removes the old kernel: its entry, its files and its menu entry go.
    remove_kernel(&root, "6.1.0-10-amd64");
    boot_sync(&root, &esp);
    assert!(!esp
        .join("loader/entries/opdbus-6.1.0-10-amd64.conf")
        .exists());
    assert!(!esp.join("opdbus/6.1.0-10-amd64").exists());
    assert!(!read(&root.join("boot/grub/grub.cfg")).contains("6.1.0-10-amd64"));
    assert!(esp.join("EFI/BOOT/BOOTX64.EFI").is_file());

    // Nothing changed: a second run leaves both trees byte for byte.
    let (esp_before, boot_before) = (tree(&esp), tree(&root.join("boot/grub")));
    boot_sync(&root, &esp);
    assert_eq!(tree(&esp), esp_before);
    assert_eq!(tree(&root.join("boot/grub")), boot_before);
}

#[test]
fn a_bios_install_rewrites_only_grubs_menu_and_needs_no_esp() {
    let dir = tempfile::tempdir().unwrap();
    let (root, esp) = fake_system(dir.path(), &setup(false, true));
    std::fs::remove_dir(&esp).unwrap();
    add_kernel(&root, "6.1.0-10-amd64");
    boot_sync(&root, &esp);
    assert!(read(&root.join("boot/grub/grub.cfg")).contains("vmlinuz-6.1.0-10-amd64"));
    assert!(!esp.exists());
    // Debian's update-grub is told the same console and arguments.
    let defaults = read(&root.join("etc/default/grub.d/op-dbus.cfg"));
    assert!(
        defaults.contains("\nGRUB_CMDLINE_LINUX='console=ttyS0'\n"),
        "{defaults}"
    );
}

#[test]
fn a_uefi_system_without_its_esp_mounted_is_an_error_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (root, esp) = fake_system(dir.path(), &setup(true, false));
    std::fs::remove_dir(&esp).unwrap();
    add_kernel(&root, "6.1.0-10-amd64");
    let out = run(&[
        "boot-sync".as_ref(),
        "--root".as_ref(),
        root.as_os_str(),
        "--esp".as_ref(),
        esp.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("mount it (fstab: /boot/efi)"),
        "{}",
        stderr(&out)
    );
}

/// The installer's path: the same code on a FAT filesystem written with
/// fatfs, re-run after a kernel was removed, removes its entry and files.
#[test]
fn on_a_fat_esp_the_entries_of_removed_kernels_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = fake_system(dir.path(), &setup(true, false));
    let img = dir.path().join("esp.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let loc = EspLocation {
        disk: img,
        start: 0,
        size: 64 << 20,
    };
    esp::format(&loc, "ABCD-0123", Some("ESP")).unwrap();
    let r = Root::open(&root).unwrap();
    let cfg = setup(true, false).config;
    add_kernel(&root, "6.1.0-10-amd64");
    add_kernel(&root, "6.1.0-11-amd64");
    let fat = Esp::open(&loc).unwrap();
    let rep = bootloader::install_systemd_boot(&fat, &r, &cfg).unwrap();
    assert_eq!(rep.entries.len(), 2);
    fat.close().unwrap();
    remove_kernel(&root, "6.1.0-10-amd64");
    let fat = Esp::open(&loc).unwrap();
    let rep = bootloader::install_systemd_boot(&fat, &r, &cfg).unwrap();
    assert_eq!(rep.removed, ["opdbus-6.1.0-10-amd64.conf"]);
    assert!(!fat.exists("opdbus/6.1.0-10-amd64"));
    assert!(!fat.exists("loader/entries/opdbus-6.1.0-10-amd64.conf"));
    assert!(fat.exists("opdbus/6.1.0-11-amd64/linux"));
    fat.close().unwrap();
}

/// A tmpfs mounted at a directory for the test (a stand-in for a vfat
/// ESP); unmounted on drop.
struct TestMount(PathBuf);

impl TestMount {
    fn tmpfs(at: &Path) -> Self {
        opdbus_common::Task::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "esp"])
            .arg(at)
            .run()
            .unwrap();
        TestMount(at.to_path_buf())
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        let _ = opdbus_common::Task::new("umount").arg(&self.0).run();
    }
}

#[test]
#[ignore = "privileged: mounts"]
fn a_mirrored_install_writes_every_mounted_esp_and_skips_a_pulled_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(true, false);
    s.esps = vec!["/boot/efi".into(), "/boot/efi2".into()];
    let (root, esp) = fake_system(dir.path(), &s);
    let esp2 = root.join("boot/efi2");
    std::fs::create_dir_all(&esp2).unwrap();
    add_kernel(&root, "6.1.0-10-amd64");
    let m1 = TestMount::tmpfs(&esp);
    let mut m2 = Some(TestMount::tmpfs(&esp2));
    let sync = || run(&["boot-sync".as_ref(), "--root".as_ref(), root.as_os_str()]);
    // Both mounted: the same files on each.
    let out = sync();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(esp
        .join("loader/entries/opdbus-6.1.0-10-amd64.conf")
        .is_file());
    assert_eq!(tree(&esp), tree(&esp2));

    // The second disk pulled (its ESP no longer mounted): the kernel
    // update still lands on the first, nothing goes into the root
    // filesystem's empty /boot/efi2, and the warning says so.
    drop(m2.take());
    add_kernel(&root, "6.1.0-11-amd64");
    let out = sync();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: the ESP /boot/efi2 is not mounted"),
        "{}",
        stderr(&out)
    );
    assert!(esp
        .join("loader/entries/opdbus-6.1.0-11-amd64.conf")
        .is_file());
    assert_eq!(std::fs::read_dir(&esp2).unwrap().count(), 0);

    // No ESP mounted at all: an error, not a silent success.
    drop(m1);
    let out = sync();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no ESP of it is mounted (/boot/efi, /boot/efi2)"),
        "{}",
        stderr(&out)
    );
}
