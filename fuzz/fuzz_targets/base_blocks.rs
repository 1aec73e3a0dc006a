//! Fuzz target: see `strata::fuzzing::base_blocks`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzzing::base_blocks(data));
