//! Arbitrary bytes through the parser, the validator, the position scanner
//! and normalization: none of them may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = opdbus_state::position::Positions::scan(text);
    match opdbus_state::parse_str(text, "fuzz.json") {
        Ok(loaded) => {
            let _ = loaded.state.network_spec();
            let _ = loaded.state.unit_specs();
        }
        Err(failure) => {
            let _ = failure.lines();
        }
    }
    let _ = opdbus_state::check_text(text, "fuzz.json", true);
});
