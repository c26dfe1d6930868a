//! Arbitrary bytes into the KISS stream decoder, cut into arbitrary chunks
//! (the first byte seeds the cuts): never panics; the chunking never changes
//! the events; every frame decoded re-encodes to bytes that a fresh decoder
//! reads as exactly that frame; data frames go on into the AX.25 decoder,
//! which must be exact too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnode::rf::ax25;
use meshnode::rf::kiss::{Command, Decoder, Event};

/// Small enough that the fuzzer reaches the oversize path.
const MAX_PAYLOAD: usize = 300;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = Decoder::new(MAX_PAYLOAD).push(stream);

    // chunk lengths from a tiny LCG seeded by the first byte
    let mut d = Decoder::new(MAX_PAYLOAD);
    let mut chunked = Vec::new();
    let (mut rest, mut x) = (stream, u32::from(seed) | 1);
    while !rest.is_empty() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = ((x >> 16) as usize % 17).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        chunked.extend(d.push(chunk));
        rest = tail;
    }
    assert_eq!(chunked, whole, "chunking changed the events");

    for event in &whole {
        let (wire, payload) = match event {
            Event::Frame(f) => (f.encode(), (f.command() == Command::Data).then(|| f.payload())),
            Event::Smack(s) => (s.encode(), Some(s.payload())),
            Event::Error(_) => continue,
        };
        assert_eq!(
            Decoder::new(MAX_PAYLOAD).push(&wire),
            [event.clone()],
            "re-encoded frame reads differently"
        );
        let Some(payload) = payload else { continue };
        for modulo in [ax25::Modulo::Eight, ax25::Modulo::OneTwentyEight] {
            if let Ok(f) = ax25::Frame::decode(payload, modulo) {
                assert_eq!(f.encode(), payload);
            }
        }
    }
});
