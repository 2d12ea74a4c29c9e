//! Parse + validate time of a ~1 MB valid state (many interfaces, units and
//! accounts), next to plain `serde_json::Value` parsing of the same text.
//! Run: `cargo bench -p opdbus-state --bench validate`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// A valid state of about `target` bytes.
fn big_state(target: usize) -> String {
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF9QkkNXDsXqqgHhb1uLz4eyLqcW9gWSjcwj/PfKm5gC bench@example";
    let hash = "$6$opdbusdefault0$ziXRATygf9Z5DbtiV9grx8WBO9a06rq4ItfrW54NtAmT1e467WKi8u5hbumKsQCnvSP.rbe.INB7Bmglp2.c81";
    let mut ifaces = String::new();
    let mut units = String::new();
    let mut accounts = String::new();
    let mut n = 0usize;
    while ifaces.len() + units.len() + accounts.len() < target {
        let (a, b) = (n / 250 % 250, n % 250);
        let sep = if n == 0 { "" } else { ",\n" };
        write!(
            ifaces,
            "{sep}      \"br{n}\": {{\"type\": \"bridge\", \"bridge_ports\": [\"ens{n}\"], \"address\": [\"10.{a}.{b}.1/24\", \"fd00:{n:x}::1/64\"], \"gateway\": \"10.{a}.{b}.254\", \"mtu\": 1500, \"dns\": [\"10.{a}.{b}.53\"]}}"
        )
        .expect("writing");
        write!(
            units,
            "{sep}      \"app-{n}.service\": {{\"active_state\": \"active\", \"enabled\": true}}"
        )
        .expect("writing");
        write!(
            accounts,
            "{sep}      \"user{n}\": {{\"uid\": {}, \"shell\": \"/bin/bash\", \"groups\": [\"sudo\"], \"password_hash\": \"{hash}\", \"ssh_authorized_keys\": [\"{key}\"]}}",
            10000 + n
        )
        .expect("writing");
        n += 1;
    }
    format!(
        "{{\n  \"version\": 1,\n  \"plugins\": {{\n    \"network\": {{\"interfaces\": {{\n{ifaces}\n    }}}},\n    \"systemd\": {{\"units\": {{\n{units}\n    }}}},\n    \"users\": {{\"accounts\": {{\n{accounts}\n    }}}}\n  }}\n}}\n"
    )
}

fn median(mut f: impl FnMut(), runs: usize) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn main() {
    let text = big_state(1 << 20);
    let runs = 15;
    // Sanity: the generated state is valid, warning-free.
    let loaded =
        opdbus_state::parse_str(&text, "bench.json").expect("the generated state is valid");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings.first());
    let n = loaded.state.network_spec().interfaces.len();

    let baseline = median(
        || {
            let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            std::hint::black_box(v);
        },
        runs,
    );
    let full = median(
        || {
            let l = opdbus_state::parse_str(&text, "bench.json").expect("valid state");
            std::hint::black_box(l);
        },
        runs,
    );
    let scan = median(
        || {
            std::hint::black_box(opdbus_state::position::Positions::scan(&text));
        },
        runs,
    );
    let last = format!("/plugins/users/accounts/user{}/uid", n - 1);
    let located = median(
        || {
            std::hint::black_box(opdbus_state::position::Positions::scan_for(
                &text,
                &[last.as_str()],
            ));
        },
        runs,
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "state: {} bytes, {n} interfaces, as many units and accounts; median of {runs} runs",
        text.len()
    );
    println!(
        "serde_json::Value parse (baseline): {:8.2} ms",
        ms(baseline)
    );
    println!(
        "opdbus_state::parse_str (parse+validate): {:8.2} ms",
        ms(full)
    );
    println!(
        "ratio parse+validate / baseline: {:.2}",
        ms(full) / ms(baseline)
    );
    println!(
        "position scan, every value (not used by parse_str): {:8.2} ms",
        ms(scan)
    );
    println!(
        "position scan for one pointer (done when reporting): {:8.2} ms",
        ms(located)
    );
}
