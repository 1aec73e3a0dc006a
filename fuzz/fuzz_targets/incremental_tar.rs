//! Fuzz target: see `strata::fuzzing::incremental_tar`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzzing::incremental_tar(data));
