//! Fuzz target: see `strata::fuzzing::time`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzzing::time(data));
