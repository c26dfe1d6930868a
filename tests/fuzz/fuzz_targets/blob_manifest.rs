//! Arbitrary bytes into the blob manifest decoder (`GET /mesh/v1/blobs/<hash>`
//! answers): never panics; whatever decodes re-encodes to exactly the input,
//! and exactly the well-framed inputs decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnode::sync::transfer::{decode_manifest, encode_manifest};

fuzz_target!(|data: &[u8]| {
    let framed = data.len() >= 8 && (data.len() - 8).is_multiple_of(32);
    match decode_manifest(data) {
        Some((size, chunks)) => {
            assert!(framed);
            assert_eq!(chunks.len(), (data.len() - 8) / 32);
            assert_eq!(encode_manifest(size, &chunks), data, "re-encoding differs");
        }
        None => assert!(!framed, "a well-framed manifest was refused"),
    }
});
