//! Arbitrary `Mesh-Path` header values (the nodes a routed content request
//! passed) into `NodeId::from_hex`, split and bounded as `/mesh/v1/content`
//! does (src/api/mesh.rs parses the header inline; this copies those three
//! lines): never panics; an accepted id is exactly 64 hex digits and prints
//! back to them (lower-cased); the path never exceeds `CONTENT_HOPS * 2` ids.
#![no_main]

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use meshnode::mesh::client::CONTENT_HOPS;
use meshnode::node::NodeId;

fuzz_target!(|data: &[u8]| {
    // the header as the handler sees it: a valid, visible-ASCII value
    let Ok(v) = HeaderValue::from_bytes(data) else {
        return;
    };
    let Ok(s) = v.to_str() else { return };
    let path: Vec<NodeId> = s
        .split(',')
        .filter_map(NodeId::from_hex)
        .take(CONTENT_HOPS as usize * 2)
        .collect();
    assert!(path.len() <= CONTENT_HOPS as usize * 2);

    for piece in s.split(',') {
        match NodeId::from_hex(piece) {
            Some(id) => {
                assert_eq!(piece.len(), 64, "{piece:?}");
                assert_eq!(id.to_hex(), piece.to_ascii_lowercase());
                assert_eq!(id.to_string(), id.to_hex());
            }
            None => assert!(
                piece.len() != 64 || !piece.bytes().all(|b| b.is_ascii_hexdigit()),
                "64 hex digits refused: {piece:?}"
            ),
        }
    }
    // the joined form a relay sends on parses back to the same path
    let joined = path
        .iter()
        .map(NodeId::to_hex)
        .collect::<Vec<_>>()
        .join(",");
    let again: Vec<NodeId> = joined.split(',').filter_map(NodeId::from_hex).collect();
    assert_eq!(again, path);
});
