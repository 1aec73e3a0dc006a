//! Fuzz target: see `strata::fuzzing::wal_history`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzzing::wal_history(data));
