//! Fuzzes the store core with any sequence of store messages from peers (what an authenticated but
//! broken peer could send over the stream transport): nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    store::fuzz_messages(data);
});
