#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringvs_fuzz::sync(data));
