//! Arbitrary bytes into the AX.25 frame decoder, read as a modulo-8 and as a
//! modulo-128 link: never panics; whatever decodes re-encodes to exactly the
//! input (what a relay forwarding frames untouched relies on), and its parts
//! build the same frame again through the checked constructor when they fit
//! its limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnode::rf::ax25::{Frame, MAX_INFO, Modulo};

fuzz_target!(|data: &[u8]| {
    for modulo in [Modulo::Eight, Modulo::OneTwentyEight] {
        let Ok(f) = Frame::decode(data, modulo) else {
            continue;
        };
        assert_eq!(f.encode(), data, "decode/encode is not exact");
        assert_eq!(f.encoded_len(), data.len());
        let _ = f.to_string();
        if f.info().len() <= MAX_INFO {
            let again = Frame::new(f.src(), f.dst(), f.path(), f.control(), modulo, f.info())
                .expect("a decoded frame's parts are valid")
                .with_command_response(f.command_response());
            assert_eq!(again, f);
        }
    }
});
