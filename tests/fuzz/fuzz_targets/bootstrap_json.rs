//! Arbitrary bytes as the JSON bodies of the bootstrap API
//! (`POST /api/bootstrap/register` requests, `GET /api/bootstrap/discover`
//! answers, which a node parses from a bootstrap node it does not control):
//! never panics; whatever parses serializes and parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnode::discovery::bootstrap::{Discover, Register};
use serde::{Serialize, de::DeserializeOwned};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        let json = serde_json::to_vec(&v).expect("a parsed body serializes");
        assert_eq!(
            serde_json::from_slice::<T>(&json).expect("own JSON parses"),
            v
        );
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Register>(data);
    round_trip::<Discover>(data);
});
