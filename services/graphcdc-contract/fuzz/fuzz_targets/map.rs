//! Any JSON change event through the mapping: it maps to point writes or is poison, and
//! every write keeps the invariants the sink and the reconciler rely on.

#![no_main]

use futures::executor::block_on;
use graphcdc_contract::codec::Codec;
use graphcdc_contract::event::Op;
use graphcdc_contract::mapping::{self, Mapper};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const DIMENSION: usize = 4;
const MAX_PAYLOAD: usize = 2_048;

static SETUP: OnceLock<(Codec, Mapper)> = OnceLock::new();

fn setup() -> (Codec, Mapper) {
    let mappings = mapping::mappings_from_toml(&format!(
        r#"
        [[mappings]]
        label = "Chunk"
        collection = "chunks"
        dimension = {DIMENSION}
        vector_property = "embedding"
        rename = {{ text = "content" }}

        [[mappings]]
        label = "Entity"
        collection = "entities"
        dimension = {DIMENSION}
        include = ["name", "type"]

        [[mappings]]
        relationship_type = "MENTIONS"
        collection = "mentions"
        dimension = {DIMENSION}
        "#
    ))
    .expect("fuzz config is valid");
    (Codec::local(), Mapper::new(mappings, MAX_PAYLOAD))
}

fuzz_target!(|data: &[u8]| {
    let (codec, mapper) = SETUP.get_or_init(setup);
    // The JSON path of the decoder, so the fuzzer reaches the mapping quickly.
    if data.first() != Some(&b'{') {
        return;
    }
    let Ok(event) = block_on(codec.decode_change(data)) else {
        return;
    };
    let Ok(writes) = mapper.map(&event) else {
        return;
    };
    for w in writes {
        assert_eq!(w.version, event.version);
        assert_eq!(w.id, mapping::point_id(&w.collection, &w.key));
        // A tombstone from an upsert only where the node left the collection's label.
        let left = mapper
            .mappings()
            .iter()
            .find(|m| m.collection == w.collection)
            .and_then(|m| m.label.as_ref())
            .is_some_and(|l| event.removed_labels.contains(l) && !event.labels.contains(l));
        assert_eq!(w.is_tombstone(), event.op == Op::Delete || left);
        if let Some(vector) = &w.vector {
            assert_eq!(vector.len(), DIMENSION);
            assert!(vector.iter().all(|x| x.is_finite()));
        }
        let version = w
            .payload
            .get(mapping::VERSION_FIELD)
            .and_then(|v| v.as_i64());
        assert_eq!(
            version,
            Some(event.version),
            "user properties never overwrite cdc_*"
        );
        assert_eq!(
            w.payload.get(mapping::KEY_FIELD).and_then(|v| v.as_str()),
            Some(w.key.as_str())
        );
        let size = serde_json::to_vec(&w.payload)
            .expect("payload serialises")
            .len();
        assert!(
            size < 2 * MAX_PAYLOAD + 1_024,
            "payload of {size} bytes passed the limit"
        );
    }
});
