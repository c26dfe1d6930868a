//! Arbitrary bytes into the reconciliation message decoder (`/mesh/v1/recon`
//! bodies and replies): never panics; whatever decodes re-encodes to exactly
//! the input; answering it from a small fixed set, on either side, never
//! panics and gives a reply that survives the codec.
#![no_main]

use std::collections::BTreeSet;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use meshnode::sync::recon::{self, Id, IdSet, Range, Role, ShortId, Summary};

/// 40 ids: enough that the root and some first-level ranges are sent as
/// fingerprints (more than `LEAF_MAX` items), with a few shared prefixes and
/// the extremes of the id space.
static SET: LazyLock<IdSet> = LazyLock::new(|| {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut ids: Vec<Id> = (0..36u64)
        .map(|i| {
            // splitmix64
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let mut id = [i as u8; 32];
            id[..8].copy_from_slice(&z.to_be_bytes());
            id
        })
        .collect();
    ids.push([0; 32]);
    ids.push([0xff; 32]);
    let mut near = [0x12; 32];
    ids.push(near);
    near[31] = 0x13; // same short id as the one before
    ids.push(near);
    IdSet::new(ids)
});

fn through_codec(msg: &[Range]) {
    let e = recon::encode(msg);
    assert_eq!(e.len(), recon::wire_size(msg));
    assert_eq!(
        recon::decode(&e).as_deref(),
        Ok(msg),
        "own encoding decodes"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = recon::decode(data) else { return };
    assert_eq!(recon::encode(&msg), data, "decode/encode is not exact");
    assert_eq!(recon::wire_size(&msg), data.len());

    let set = &*SET;
    let listed: BTreeSet<ShortId> = msg
        .iter()
        .filter_map(|r| match &r.summary {
            Summary::Ids(v) | Summary::Settled(v) => Some(v.iter().copied()),
            Summary::Fingerprint { .. } => None,
        })
        .flatten()
        .collect();
    for role in [Role::Responder, Role::Initiator] {
        let (reply, out) = recon::respond(set, &msg, role);
        through_codec(&reply);
        // what we give is ours; what we need the peer listed (a peer may
        // list ids outside a range's prefix, so "need" may hold ids we have)
        assert!(out.give.iter().all(|id| set.contains(id)));
        assert!(out.need.iter().all(|s| listed.contains(s)));
        if role == Role::Initiator {
            assert!(
                reply
                    .iter()
                    .all(|r| !matches!(r.summary, Summary::Settled(_)))
            );
        }
    }

    // a range described from the very same set settles at once
    let own: Vec<Range> = msg
        .iter()
        .map(|r| Range {
            prefix: r.prefix,
            summary: set.summarize(r.prefix),
        })
        .collect();
    let (reply, out) = recon::respond(set, &own, Role::Responder);
    assert!(reply.is_empty(), "own summaries did not settle: {reply:?}");
    assert!(out.need.is_empty() && out.give.is_empty());
});
