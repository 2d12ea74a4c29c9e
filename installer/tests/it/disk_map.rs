//! `--disk` maps: one target per device key, each key once, an image in use
//! by a loop device refused; runs the real binary. Tier 1 (`plan` reads only
//! sizes) and tier 2 (root: a loop device attached by the test).

use crate::cli_common;

use std::ffi::OsStr;
use std::path::Path;

use cli_common::*;

/// default.json with a second disk `/dev/vdb` (one ext4 partition).
fn two_disk_state(dir: &Path) -> std::path::PathBuf {
    state(dir, |v| {
        v["plugins"]["storage"]["devices"]["/dev/vdb"] = serde_json::json!({
            "partition_table": "gpt",
            "partitions": [
                {"number": 1, "size": "remaining", "type": "linux", "filesystem": "ext4"}
            ]
        });
    })
}

fn plan(state: &Path, maps: &[String]) -> std::process::Output {
    let mut args: Vec<&OsStr> = vec![OsStr::new("plan"), state.as_os_str()];
    for m in maps {
        args.push(OsStr::new("--disk"));
        args.push(OsStr::new(m));
    }
    run(&args)
}

#[test]
fn two_keys_on_one_image_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let st = two_disk_state(dir.path());
    let a = marked_image(dir.path(), "a.img", 4 * GIB);
    let b = marked_image(dir.path(), "b.img", 4 * GIB);
    let ok = plan(
        &st,
        &[
            format!("/dev/vda={}", a.display()),
            format!("/dev/vdb={}", b.display()),
        ],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));

    // The same path, a symlink to it, and a hard link to it.
    let link = dir.path().join("link.img");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let hard = dir.path().join("hard.img");
    std::fs::hard_link(&a, &hard).unwrap();
    for other in [&a, &link, &hard] {
        let out = plan(
            &st,
            &[
                format!("/dev/vda={}", a.display()),
                format!("/dev/vdb={}", other.display()),
            ],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", other.display());
        assert!(
            err.contains("devices /dev/vda and /dev/vdb both map to one disk")
                && err.contains("give each device key its own disk or image"),
            "{err}"
        );
    }
}

#[test]
fn a_key_given_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), |_| {});
    let a = marked_image(dir.path(), "a.img", 4 * GIB);
    let b = marked_image(dir.path(), "b.img", 4 * GIB);
    let out = plan(
        &st,
        &[
            format!("/dev/vda={}", a.display()),
            format!("/dev/vda={}", b.display()),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--disk /dev/vda= is given twice")
            && err.contains(&a.display().to_string())
            && err.contains(&b.display().to_string()),
        "{err}"
    );
}

#[test]
#[ignore = "privileged: loop devices"]
fn an_image_attached_to_a_loop_device_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let st = two_disk_state(dir.path());
    let img = marked_image(dir.path(), "busy.img", 4 * GIB);
    let other = marked_image(dir.path(), "other.img", 4 * GIB);
    let before = marks(&img);
    let lo = TestLoop::attach(&img);

    let one = dir.path().join("one");
    std::fs::create_dir_all(&one).unwrap();
    let single = state(&one, |_| {});
    let out = run(&[
        OsStr::new("disk"),
        single.as_os_str(),
        OsStr::new("--disk"),
        OsStr::new(&format!("/dev/vda={}", img.display())),
        OsStr::new("--yes"),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("the image is attached to {}", lo.0))
            && err.contains(&format!("losetup -d {}", lo.0)),
        "{err}"
    );
    assert_eq!(marks(&img), before, "the busy image was written");

    // The loop device and its own image as two keys: one disk.
    let out = plan(
        &st,
        &[
            format!("/dev/vda={}", lo.0),
            format!("/dev/vdb={}", img.display()),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("both map to one disk"), "{err}");
    drop(other);
    drop(lo);
    assert_eq!(loops_of(&img).trim(), "");
}

/// `disk --dry-run --json` on a blank image: one JSON document with the
/// plan and the per-item report, and nothing written.
#[test]
fn disk_dry_run_json_parses() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), |_| {});
    let img = marked_image(dir.path(), "a.img", 4 * GIB);
    let before = marks(&img);
    let out = run(&[
        OsStr::new("disk"),
        st.as_os_str(),
        OsStr::new("--disk"),
        OsStr::new(&format!("/dev/vda={}", img.display())),
        OsStr::new("--dry-run"),
        OsStr::new("--json"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .expect("disk --dry-run --json prints one JSON document");
    assert_eq!(v["report"]["dry_run"], true);
    assert!(!v["report"]["items"].as_array().unwrap().is_empty(), "{v}");
    assert!(v["plan"]["disk"].is_object(), "{v}");
    assert!(v["mounted_at"].is_null());
    assert_eq!(marks(&img), before, "a dry run wrote the image");
}
