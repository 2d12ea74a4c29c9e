//! Turning answers into state.json: edits the original JSON document in place
//! (key order kept) and touches only what an answer changed, so sections and
//! fields the wizard does not ask about survive as they were.

use opdbus_state::model::{partition_path, DiskSelector, Distribution, Firmware};
use serde_json::{json, Map, Value};

use super::answers::{Answers, Layout, NetMode, RootPassword};

/// The object at `key` of `v`, created (empty) when missing or not an object.
fn obj<'a>(v: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = v
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().expect("slot was just made an object")
}

fn root(doc: &mut Value) -> &mut Map<String, Value> {
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    doc.as_object_mut().expect("doc was just made an object")
}

/// Inserts `bootstrap` after `version`/`metadata` when the document has none.
fn bootstrap(doc: &mut Value) -> &mut Map<String, Value> {
    let r = root(doc);
    if !r.contains_key("bootstrap") {
        let old = std::mem::take(r);
        for (k, v) in old {
            if k == "plugins" && !r.contains_key("bootstrap") {
                r.insert("bootstrap".into(), Value::Object(Map::new()));
            }
            r.insert(k, v);
        }
        r.entry("bootstrap")
            .or_insert_with(|| Value::Object(Map::new()));
    }
    obj(r, "bootstrap")
}

pub fn distribution_name(d: Distribution) -> &'static str {
    match d {
        Distribution::Debian => "debian",
        Distribution::Proxmox => "proxmox",
    }
}

pub fn firmware_name(f: Firmware) -> &'static str {
    match f {
        Firmware::Uefi => "uefi",
        Firmware::Bios => "bios",
        Firmware::Both => "both",
    }
}

/// The storage section of a layout preset on device `key`.
pub fn preset_storage(
    layout: Layout,
    key: &str,
    firmware: Firmware,
    selector: &DiskSelector,
) -> Value {
    let mut parts = Vec::new();
    let mut n = 0;
    if firmware.bios() {
        n += 1;
        parts.push(json!({"number": n, "size": "1M", "type": "bios_boot"}));
    }
    if firmware.uefi() {
        n += 1;
        parts.push(json!({"number": n, "size": "512M", "type": "efi", "filesystem": "vfat", "mount": "/boot/efi"}));
    }
    n += 1;
    let root_part = partition_path(key, n);
    let selector = serde_json::to_value(selector).unwrap_or(Value::Null);
    match layout {
        Layout::Ext4 => {
            parts.push(json!({"number": n, "size": "remaining", "type": "linux", "filesystem": "ext4", "label": "root", "mount": "/"}));
            json!({
                "devices": {key: {"partition_table": "gpt", "selector": selector, "partitions": parts}}
            })
        }
        Layout::Btrfs | Layout::Keep => {
            parts.push(json!({"number": n, "size": "remaining", "type": "linux", "filesystem": "btrfs", "label": "opdbus"}));
            json!({
                "devices": {key: {"partition_table": "gpt", "selector": selector, "partitions": parts}},
                "btrfs_subvolumes": {root_part.clone(): [
                    {"name": "@", "mount": "/"},
                    {"name": "@home", "mount": "/home"},
                    {"name": "@var_log", "mount": "/var/log"},
                    {"name": "@op-dbus", "mount": "/var/lib/op-dbus", "compression": "zstd:1"}
                ]},
                "mounts": {"/": {"device": root_part, "subvol": "@", "options": "compress=zstd:1,noatime"}}
            })
        }
    }
}

/// Reads one answer as the JSON value it is stored as.
type Getter = dyn Fn(&Answers) -> Value;

/// Applies `new` to `base`. `orig` are the answers `base` gave (None for a
/// new install: everything is written). `selector` is the disk selector to
/// store for the system device, or None to leave the file's one.
pub fn apply(
    base: &Value,
    orig: Option<&Answers>,
    new: &Answers,
    selector: Option<&DiskSelector>,
) -> Value {
    let mut doc = base.clone();
    {
        let r = root(&mut doc);
        r.entry("version").or_insert(json!(1));
    }
    let changed = |f: &dyn Fn(&Answers) -> Value| orig.is_none_or(|o| f(o) != f(new));

    // bootstrap scalars
    let scalars: [(&str, &Getter); 8] = [
        ("distribution", &|a| {
            json!(distribution_name(a.distribution))
        }),
        ("suite", &|a| json!(a.suite)),
        ("hostname", &|a| json!(a.hostname)),
        ("domain", &|a| json!(a.domain)),
        ("timezone", &|a| json!(a.timezone)),
        ("locale", &|a| json!(a.locale)),
        ("keyboard", &|a| json!(a.keyboard)),
        ("firmware", &|a| json!(firmware_name(a.firmware))),
    ];
    // A new document gets its fields in a readable order: device first.
    if orig.is_none() {
        bootstrap(&mut doc).insert("device".into(), json!(new.device_key));
    }
    for (key, get) in scalars {
        if !changed(get) {
            continue;
        }
        let b = bootstrap(&mut doc);
        let v = get(new);
        if v.as_str() == Some("") {
            b.remove(key);
        } else {
            b.insert(key.into(), v);
        }
    }
    if let RootPassword::Hash(h) = &new.root_password {
        bootstrap(&mut doc).insert("root_password_hash".into(), json!(h));
    }

    // storage
    let plugins = obj(root(&mut doc), "plugins");
    match new.layout {
        Layout::Keep => {
            if let Some(sel) = selector {
                let storage = obj(plugins, "storage");
                let devices = obj(storage, "devices");
                let dev = obj(devices, &new.device_key);
                dev.insert(
                    "selector".into(),
                    serde_json::to_value(sel).unwrap_or(Value::Null),
                );
            }
        }
        layout => {
            let layout_changed = orig.is_none_or(|o| {
                o.layout != layout || o.disk != new.disk || o.firmware != new.firmware
            });
            if layout_changed {
                let sel = selector.cloned().unwrap_or_default();
                plugins.insert(
                    "storage".into(),
                    preset_storage(layout, &new.device_key, new.firmware, &sel),
                );
            }
        }
    }
    let device_changed = orig.is_none_or(|o| o.device_key != new.device_key);
    if device_changed {
        bootstrap(&mut doc).insert("device".into(), json!(new.device_key));
    }

    // network
    if orig.is_none_or(|o| o.net != new.net) && new.net.mode != NetMode::Keep {
        let plugins = obj(root(&mut doc), "plugins");
        if let Some(o) = orig.filter(|o| o.net.mode != NetMode::Keep) {
            if let Some(ifaces) = plugins
                .get_mut("network")
                .and_then(|n| n.get_mut("interfaces"))
                .and_then(Value::as_object_mut)
            {
                if o.net.mode != NetMode::Unmanaged {
                    ifaces.shift_remove(&o.net.nic);
                    if !o.net.bridge.is_empty() {
                        ifaces.shift_remove(&o.net.bridge);
                    }
                }
            }
        }
        if new.net.mode != NetMode::Unmanaged {
            let ifaces = obj(obj(plugins, "network"), "interfaces");
            let mut l3 = Map::new();
            if new.net.mode == NetMode::Dhcp {
                l3.insert("dhcp".into(), json!(true));
            } else {
                l3.insert("address".into(), json!(new.net.address));
                if !new.net.gateway.is_empty() {
                    l3.insert("gateway".into(), json!(new.net.gateway));
                }
            }
            let dns = super::checks::split_list(&new.net.dns);
            if !dns.is_empty() {
                l3.insert("dns".into(), json!(dns));
            }
            if new.net.bridge.is_empty() {
                let mut e = Map::new();
                e.insert("type".into(), json!("ethernet"));
                e.extend(l3);
                ifaces.insert(new.net.nic.clone(), Value::Object(e));
            } else {
                ifaces.insert(new.net.nic.clone(), json!({"type": "ethernet"}));
                let mut br = Map::new();
                br.insert("type".into(), json!("bridge"));
                br.insert("bridge_ports".into(), json!([new.net.nic]));
                br.extend(l3);
                ifaces.insert(new.net.bridge.clone(), Value::Object(br));
            }
        }
    }

    // administrator account
    if orig.is_none_or(|o| o.admin != new.admin || o.ssh_key != new.ssh_key) {
        let plugins = obj(root(&mut doc), "plugins");
        let old_name = orig.map(|o| o.admin.clone()).unwrap_or_default();
        let mut entry = plugins
            .get_mut("users")
            .and_then(|u| u.get_mut("accounts"))
            .and_then(Value::as_object_mut)
            .and_then(|a| {
                if old_name.is_empty() {
                    None
                } else {
                    a.shift_remove(&old_name)
                }
            })
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_else(|| {
                let mut m = Map::new();
                m.insert("groups".into(), json!(["sudo"]));
                m.insert("shell".into(), json!("/bin/bash"));
                m
            });
        if orig.is_none_or(|o| o.ssh_key != new.ssh_key) {
            if new.ssh_key.is_empty() {
                entry.remove("ssh_authorized_keys");
            } else {
                let keys = entry
                    .entry("ssh_authorized_keys")
                    .or_insert_with(|| json!([]));
                match keys.as_array_mut() {
                    Some(list) if !list.is_empty() => list[0] = json!(new.ssh_key),
                    _ => *keys = json!([new.ssh_key]),
                }
            }
        }
        if !new.admin.is_empty() {
            let accounts = obj(obj(plugins, "users"), "accounts");
            accounts.insert(new.admin.clone(), Value::Object(entry));
        }
    }
    doc
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wizard::answers::Net;

    fn example(name: &str) -> (Value, opdbus_state::State) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../state-examples")
            .join(name);
        let text = std::fs::read_to_string(path).unwrap();
        let loaded = opdbus_state::parse_str(&text, name).unwrap();
        (serde_json::from_str(&text).unwrap(), loaded.state)
    }

    #[test]
    fn unchanged_answers_leave_the_document_identical() {
        for name in [
            "complete-server.json",
            "default.json",
            "proxmox-minimal.json",
            "enterprise-network.json",
        ] {
            let (doc, state) = example(name);
            let a = Answers::from_state(&state, &[], &[]);
            let out = apply(&doc, Some(&a), &a, None);
            assert_eq!(out, doc, "{name}");
            assert_eq!(
                serde_json::to_string(&out).unwrap(),
                serde_json::to_string(&doc).unwrap(),
                "{name}: key order"
            );
        }
    }

    #[test]
    fn changed_answers_touch_only_their_fields() {
        let (doc, state) = example("complete-server.json");
        let orig = Answers::from_state(&state, &[], &[]);
        assert_eq!(orig.net.bridge, "vmbr0");
        assert_eq!(orig.net.nic, "ens18");
        assert_eq!(orig.admin, "admin");
        let mut new = orig.clone();
        new.hostname = "pve2".into();
        new.net = Net {
            mode: NetMode::Dhcp,
            ..orig.net.clone()
        };
        new.admin = "ops".into();
        let out = apply(&doc, Some(&orig), &new, None);
        assert_eq!(out["bootstrap"]["hostname"], "pve2");
        assert_eq!(
            out["plugins"]["network"]["interfaces"]["vmbr0"]["dhcp"],
            true
        );
        assert_eq!(
            out["plugins"]["network"]["interfaces"]["vmbr1"],
            doc["plugins"]["network"]["interfaces"]["vmbr1"]
        );
        assert_eq!(out["plugins"]["users"]["accounts"]["ops"]["uid"], 1000);
        assert!(out["plugins"]["users"]["accounts"].get("admin").is_none());
        for section in ["storage", "packagekit", "systemd", "firewall", "lxc"] {
            assert_eq!(
                out["plugins"][section], doc["plugins"][section],
                "{section}"
            );
        }
        let text = serde_json::to_string_pretty(&out).unwrap();
        opdbus_state::parse_str(&text, "out.json").unwrap();
    }

    #[test]
    fn new_install_validates() {
        let mut a = Answers::fresh(&[], &["ens3".to_string()]);
        a.disk = "sda".into();
        a.device_key = "/dev/sda".into();
        a.root_password = RootPassword::Hash("$6$salt$hash".into());
        for layout in [Layout::Btrfs, Layout::Ext4] {
            for fw in [Firmware::Uefi, Firmware::Bios, Firmware::Both] {
                a.layout = layout;
                a.firmware = fw;
                let sel = DiskSelector {
                    serial: Some("S1".into()),
                    ..Default::default()
                };
                let out = apply(&json!({}), None, &a, Some(&sel));
                let text = serde_json::to_string_pretty(&out).unwrap();
                let loaded = opdbus_state::parse_str(&text, "new.json")
                    .unwrap_or_else(|e| panic!("{layout:?} {fw:?}: {e}\n{text}"));
                assert_eq!(loaded.state.bootstrap.unwrap().hostname, "opdbus");
                assert_eq!(
                    out["plugins"]["storage"]["devices"]["/dev/sda"]["selector"]["serial"],
                    "S1"
                );
            }
        }
    }
}
