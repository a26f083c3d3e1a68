#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsbus_proto_fuzz::frame_decoder_server(data));
