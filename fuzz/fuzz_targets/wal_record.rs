//! Fuzzes the store log decoder: any bytes decode without panicking, and whatever is accepted
//! re-encodes to exactly the accepted prefix of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    store::wal::fuzz_check(data);
});
