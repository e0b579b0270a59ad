//! IAM policy documents: the bytes are the JSON text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| berth_iam::fuzzing::policy(data));
