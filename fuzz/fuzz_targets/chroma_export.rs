//! Fuzz target: see `strata::fuzzing::chroma_export`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzzing::chroma_export(data));
