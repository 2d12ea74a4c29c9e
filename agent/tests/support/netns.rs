//! Test helper: a fresh, uniquely named network namespace that is deleted on
//! drop, a way to run the netlink adapter inside it, and `ip -n NS -j` reads
//! to verify its work independently. Nothing here touches the host namespace.

#![allow(dead_code)]

use std::fs::File;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{setns, CloneFlags};
use opdbus_agent::netlink::Netlink;
use opdbus_common::Task;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace made with `ip netns add`; `ip netns del` on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `opdbus-t-<pid>-<n>`; panics when that is impossible (not root).
    pub fn new() -> Self {
        let name = format!(
            "opdbus-t-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        Task::new("ip")
            .args(["netns", "add", &name])
            .run()
            .unwrap_or_else(|e| panic!("creating network namespace {name}: {e}"));
        // Bring up lo so the namespace looks like a normal one.
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` with a [`Netlink`] opened inside this namespace, on a
    /// dedicated thread (namespaces are per thread) with a current-thread
    /// tokio runtime. Panics inside `f` propagate to the caller.
    pub fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce(Netlink) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        let thread = std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            // If this fails the thread must not go on: it would act on the host.
            setns(&ns, CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("entering network namespace {path}: {e}"));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building a tokio runtime");
            rt.block_on(async move {
                let nl = Netlink::new().expect("opening netlink in the test namespace");
                f(nl).await
            })
        });
        match thread.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Runs `ip -n NS <args>`, panicking with its stderr on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        Task::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .read()
            .unwrap_or_else(|e| panic!("ip -n {} {}: {e}", self.name, args.join(" ")))
    }

    /// Runs `ip -n NS -j <args>` and parses its JSON output.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let out = Task::new("ip")
            .args(["-n", &self.name, "-j"])
            .args(args)
            .read()
            .unwrap_or_else(|e| panic!("ip -n {} -j {}: {e}", self.name, args.join(" ")));
        if out.trim().is_empty() {
            return serde_json::Value::Array(Vec::new());
        }
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("parsing `ip -j {}` output {out:?}: {e}", args.join(" ")))
    }

    /// `ip -j link show` as (name -> object).
    pub fn link(&self, name: &str) -> Option<serde_json::Value> {
        self.ip_json(&["-d", "link", "show"])
            .as_array()
            .expect("ip -j link returns an array")
            .iter()
            .find(|l| l["ifname"] == name)
            .cloned()
    }

    /// Link names in the namespace.
    pub fn link_names(&self) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .expect("ip -j link returns an array")
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_string))
            .collect()
    }

    /// Addresses of `ifname` as `addr/prefix` strings.
    pub fn addrs(&self, ifname: &str) -> Vec<String> {
        self.ip_json(&["addr", "show", "dev", ifname])
            .as_array()
            .expect("ip -j addr returns an array")
            .iter()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or("?"), a["prefixlen"]))
            .collect()
    }

    /// Routes of the main table for `family` ("-4" or "-6").
    pub fn routes(&self, family: &str) -> Vec<serde_json::Value> {
        self.ip_json(&[family, "route", "show", "table", "main"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Links as sorted `[ifname, mtu, master, flags, address]` rows: what
    /// `ip -j` shows without the fields that move by themselves (counters).
    pub fn link_rows(&self) -> Vec<serde_json::Value> {
        let mut links: Vec<serde_json::Value> = self
            .ip_json(&["link", "show"])
            .as_array()
            .expect("ip -j link returns an array")
            .iter()
            .map(|l| {
                serde_json::json!([l["ifname"], l["mtu"], l["master"], l["flags"], l["address"]])
            })
            .collect();
        links.sort_by_key(|v| v.to_string());
        links
    }

    /// Addresses as sorted `[ifname, …row(addr_info entry)]` rows; `row`
    /// picks the fields, `None` leaves the address out (timers and DAD
    /// state are never compared).
    pub fn address_rows(
        &self,
        row: impl Fn(&serde_json::Value) -> Option<Vec<serde_json::Value>>,
    ) -> Vec<serde_json::Value> {
        let mut addrs: Vec<serde_json::Value> = self
            .ip_json(&["addr", "show"])
            .as_array()
            .expect("ip -j addr returns an array")
            .iter()
            .flat_map(|l| {
                let name = l["ifname"].clone();
                l["addr_info"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|a| row(&a))
                    .map(move |mut r| {
                        r.insert(0, name.clone());
                        serde_json::Value::Array(r)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        addrs.sort_by_key(|v| v.to_string());
        addrs
    }

    /// Routes of both families as sorted `[dst, gateway, dev, protocol,
    /// metric]` rows.
    pub fn route_rows(&self) -> Vec<serde_json::Value> {
        let mut routes: Vec<serde_json::Value> = ["-4", "-6"]
            .iter()
            .flat_map(|f| self.routes(f))
            .map(|r| {
                serde_json::json!([r["dst"], r["gateway"], r["dev"], r["protocol"], r["metric"]])
            })
            .collect();
        routes.sort_by_key(|v| v.to_string());
        routes
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = Task::new("ip").args(["netns", "del", &self.name]).run() {
            eprintln!("warning: deleting network namespace {}: {e}", self.name);
        }
    }
}
