//! SigV4: the first line is the query string, then `name: value` headers, an empty line,
//! the body (`berth_iam::fuzzing::request_parts`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| berth_iam::fuzzing::sigv4(data));
