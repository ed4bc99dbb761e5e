//! Any bytes as a change-topic or state-topic value: the decoder returns an event or a
//! poison error and never panics; whatever decodes re-encodes (Avro) to the same event.

#![no_main]

use futures::executor::block_on;
use graphcdc_contract::codec::{Codec, Format};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static CODEC: OnceLock<Codec> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let codec = CODEC.get_or_init(Codec::local);
    if let Ok(event) = block_on(codec.decode_change(data)) {
        // Events that cannot be encoded are refused at encode time (an error, no panic);
        // what encodes must decode to the same event (Debug: NaN equals itself there).
        if let Ok(bytes) = block_on(codec.encode_change(&event, Format::Avro)) {
            let back = block_on(codec.decode_change(&bytes)).expect("re-encoded event decodes");
            assert_eq!(format!("{back:?}"), format!("{event:?}"));
        }
    }
    let _ = block_on(codec.decode_state(data));
});
