//! Arbitrary headers, path and body into the node-to-node request signature
//! check (every `/mesh/` and `/api/bootstrap/` request but `discover`): never
//! panics, and whatever it accepts really is signed by the node it names.
//!
//! Input: `METHOD \n Mesh-Node \n Mesh-Signature \n path?query \n body`
//! (missing lines mean a missing header / empty path / empty body).
#![no_main]

use http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use meshnode::mesh::client::{NODE_HEADER, SIG_HEADER, signed_bytes, verify_request};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(5, |b| *b == b'\n');
    let method = parts.next().unwrap_or_default();
    let node = parts.next();
    let sig = parts.next();
    let path = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();

    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for (name, value) in [(NODE_HEADER, node), (SIG_HEADER, sig)] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_bytes(v).ok()) {
            headers.insert(name, v);
        }
    }
    if let Some(caller) = verify_request(&method, path, &headers, body) {
        let mut s = [0u8; 64];
        hex::decode_to_slice(headers[SIG_HEADER].as_bytes(), &mut s).expect("accepted: hex");
        assert_eq!(
            hex::decode(headers[NODE_HEADER].as_bytes()).expect("accepted: hex"),
            caller.0
        );
        assert!(meshnode::identity::verify(
            &caller,
            &signed_bytes(method.as_str(), path, body),
            &s
        ));
    }
});
