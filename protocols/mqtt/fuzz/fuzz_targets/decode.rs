//! `cargo fuzz run decode`: decode arbitrary bytes in every protocol version, and
//! re-encode/re-decode each packet found (see `tern_mqtt_fuzz::check`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tern_mqtt_fuzz::check(data));
