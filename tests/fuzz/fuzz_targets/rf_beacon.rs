//! Arbitrary bytes as a service beacon, both as a whole AX.25 frame heard on
//! the air and as a bare info field: never panics; a frame that is not a
//! beacon is `Ok(None)`; whatever decodes is bounded, re-encodes to a form
//! that decodes to the same beacon, and a beacon from a frame names the
//! frame's source.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnode::rf::ax25::{Frame, Modulo};
use meshnode::rf::beacon::{Beacon, MAX_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = Beacon::decode(data) {
        assert!(data.len() <= MAX_LEN);
        let again = b.encode();
        assert!(again.len() <= MAX_LEN);
        assert_eq!(Beacon::decode(&again), Ok(b));
    }
    let Ok(frame) = Frame::decode(data, Modulo::Eight) else {
        return;
    };
    if let Ok(Some(b)) = Beacon::from_frame(&frame) {
        let call = b.name.split_once('-').map(|(c, _)| c).expect("checked name");
        assert_eq!(call, frame.src().callsign());
        let sent = b.frame(frame.src().with_ch_bit(false));
        let back = Frame::decode(&sent, Modulo::Eight).expect("our own frame");
        assert_eq!(Beacon::from_frame(&back), Ok(Some(b)));
    }
});
