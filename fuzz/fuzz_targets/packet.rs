//! Fuzzes the packet decoders behind the envelope: the input, sealed with the cluster key on the
//! channel its first byte picks, goes to a membership core as a datagram from a peer. Nothing may
//! panic, whatever an authenticated peer sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    membership::fuzz_datagram(data);
});
