//! Arbitrary strings into the uplink probe target parser (`probes` in the
//! config): never panics; a parsed target prints to a string that parses
//! back to the same target, and that string is a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnode::connectivity::ProbeTarget;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = ProbeTarget::parse(s) {
        match &t {
            ProbeTarget::Tcp { host, port } => {
                assert!(!host.is_empty() && *port > 0, "{t:?}");
            }
            ProbeTarget::Http { host, port, path } => {
                assert!(
                    !host.is_empty() && *port > 0 && path.starts_with('/'),
                    "{t:?}"
                );
            }
        }
        let printed = t.to_string();
        let again = ProbeTarget::parse(&printed)
            .unwrap_or_else(|e| panic!("{t:?} prints as {printed:?}, which does not parse: {e}"));
        assert_eq!(again, t, "printed as {printed:?}");
        assert_eq!(again.to_string(), printed);
    }
});
