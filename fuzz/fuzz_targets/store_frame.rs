//! Fuzzes the store transport's frame decoder (challenge, sequence number, sender, message,
//! keyring operations): nothing may panic, whatever an authenticated peer or a replayer sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    agent::transport::fuzz_frame(data);
});
