//! Any bytes fed to the frame decoder, with and without a key: it must never panic, and every
//! frame it accepts must encode back to the same bytes.
#![no_main]

use elect_raft::wire::{decode, encode, ClusterKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = ClusterKey::new(*b"fuzz-cluster-key-0123").expect("long enough");
    for key in [None, Some(&key)] {
        if let Ok((from, message)) = decode(data, key) {
            let frame = encode(&from, &message, key);
            if key.is_some() {
                assert_eq!(&frame[4..], data, "an accepted frame re-encodes to itself");
            }
        }
    }
});
