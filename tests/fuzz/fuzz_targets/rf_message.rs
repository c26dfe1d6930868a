//! Arbitrary bytes as what another station sends over RF: as an info field
//! (a message fragment), a fragment bitmap, content requests and answers,
//! and as a stream of frames fed to a station's exchanges (catalog sync,
//! content requests). Never panics; whatever decodes re-encodes to the same
//! value; the exchanges keep their bounds (messages being reassembled) and
//! every frame they send fits the packet length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnode::rf::airtime::Lane;
use meshnode::rf::ax25::Address;
use meshnode::rf::http::{ContentAns, ContentReq};
use meshnode::rf::msg::{self, Bitmap, Fragment};
use meshnode::rf::sync::{Exchanges, Out, Timing};
use meshnode::sync::catalog::MeshCatalog;

const PACLEN: usize = 64;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = Fragment::decode(data) {
        assert!((f.index as usize) < f.count && f.count <= msg::MAX_FRAGMENTS);
    }
    if let Some(b) = Bitmap::decode(data) {
        assert_eq!(Bitmap::decode(&b.encode()), Some(b));
    }
    if let Ok(r) = ContentReq::decode(data) {
        assert_eq!(ContentReq::decode(&r.encode()), Ok(r));
    }
    if let Ok(a) = ContentAns::decode(data) {
        assert_eq!(ContentAns::decode(&a.encode()), Ok(a));
    }
    // the bytes as frames from two stations to this one: [len, station, ...]
    let me = Address::parse("N0CALL-1").unwrap();
    let others = [Address::parse("N1ABC").unwrap(), Address::parse("N2DEF-7").unwrap()];
    let timing = Timing {
        bitrate: 1200,
        overhead_us: 300_000,
        background_budget: 0.05,
        request_budget: 0.5,
        paclen: PACLEN,
    };
    let mut ex = Exchanges::new(me, PACLEN, timing, 0);
    let cat = MeshCatalog::new();
    let (mut rest, mut now) = (data, 0u64);
    while let Some((&n, tail)) = rest.split_first() {
        let n = (n as usize).min(tail.len().saturating_sub(1));
        let Some((&who, tail)) = tail.split_first() else { break };
        let (frame, tail) = tail.split_at(n.min(tail.len()));
        rest = tail;
        now += 1_000_000;
        let from = others[who as usize % 2];
        let mut outs = ex.on_frame(from, me, frame, now, &cat);
        if who & 0x80 != 0 {
            outs.extend(ex.poll(now * 1000, &cat));
        }
        for o in outs {
            match o {
                Out::Send { frames, .. } => assert!(frames.iter().all(|f| f.len() <= PACLEN)),
                Out::HttpRequest { from, id, .. } => {
                    let ans = ContentAns::error(404, "no");
                    for o in ex.answer(from, id, msg::Kind::HttpResp, &ans.encode(), Lane::Requests).unwrap() {
                        if let Out::Send { frames, .. } = o {
                            assert!(frames.iter().all(|f| f.len() <= PACLEN));
                        }
                    }
                }
                Out::Records { .. } | Out::Answer { .. } => {}
            }
        }
        assert!(ex.in_progress() <= 64);
    }
});
