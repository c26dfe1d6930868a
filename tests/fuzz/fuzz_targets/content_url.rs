//! Arbitrary request paths into the content-URL parser: never panics, and a
//! canonical URL parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshnode::catalog::ContentUrl;
use meshnode::node::Callsign;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let cs = Callsign::parse("N0CALL").expect("valid");
    if let Ok(u) = ContentUrl::new(cs.clone(), s) {
        assert_eq!(ContentUrl::new(cs, u.path()).expect("canonical parses"), u);
        assert_eq!(ContentUrl::parse(&u.to_string()).expect("display parses"), u);
    }
    let _ = meshnode::catalog::url::radio_host_callsign(s);
});
