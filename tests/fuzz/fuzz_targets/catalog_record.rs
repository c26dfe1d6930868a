//! Arbitrary bytes into the signed catalog record decoder (`records/put`
//! bodies, `records/get` answers): never panics; whatever opens is in
//! canonical form, so it re-encodes to exactly its wire bytes and opens again
//! to the same record and id; the real Ed25519 check accepts only a subset of
//! what an accept-all check does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnode::catalog::ContentUrl;
use meshnode::sync::record::{self, Signed};

fn accept_all(_: &meshnode::node::NodeId, _: &[u8], _: &[u8; 64]) -> bool {
    true
}

fn check_opened(s: &Signed) {
    // opening its own wire bytes gives the same record, id and bytes
    assert_eq!(
        record::open(&s.wire(), accept_all).as_ref(),
        Ok(s),
        "open(wire) does not round-trip"
    );
    // signing the decoded record again (with the signature it came with)
    // reproduces the wire bytes exactly: one record, one encoding, one id
    let sig: [u8; 64] = s.wire()[s.wire().len() - 64..].try_into().expect("64 bytes");
    let again = s.record.clone().sign(|_| sig);
    assert_eq!(again.wire(), s.wire(), "re-encoding changed the wire bytes");
    assert_eq!(again.id, s.id);
    // what open() checked holds
    assert!(ContentUrl::parse(&s.record.url).is_ok());
    if s.record.content.is_some() {
        assert!(s.record.priority().is_some() && s.record.access().is_some());
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok((one, rest)) = record::split(data) {
        assert_eq!(one.len() + rest.len(), data.len());
        assert!(one.len() >= 2 + 64);
    }

    // the body decoder and field checks, with the signature check out of the way
    let (ok, bad) = record::open_many(data, accept_all);
    let mut used = 0;
    for s in &ok {
        check_opened(s);
        used += s.wire().len();
    }
    assert!(used <= data.len());
    if bad == 0 {
        // nothing skipped: the records are exactly the input
        assert_eq!(used, data.len());
        assert_eq!(
            ok.iter()
                .flat_map(|s| s.wire())
                .collect::<Vec<_>>(),
            data
        );
    }

    // a whole input that opens is one record
    if let Ok(s) = record::open(data, accept_all) {
        assert_eq!(s.wire(), data);
        check_opened(&s);
    }

    // the real signature check, as the `records/put` handler runs it: a
    // subset of the above, in the same order
    let (real, real_bad) = record::open_many(data, meshnode::identity::verify);
    assert_eq!(real.len() + real_bad, ok.len() + bad);
    let mut rest = ok.iter();
    for s in &real {
        assert!(
            rest.any(|o| o == s),
            "verified record not among the decoded ones"
        );
        assert!(meshnode::identity::verify(
            &s.record.origin,
            &s.wire()[2..s.wire().len() - 64],
            s.wire()[s.wire().len() - 64..].try_into().expect("64 bytes"),
        ));
    }
});
