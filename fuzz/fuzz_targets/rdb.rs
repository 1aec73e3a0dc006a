//! Fuzz target: see `strata::fuzzing::rdb`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzzing::rdb(data));
