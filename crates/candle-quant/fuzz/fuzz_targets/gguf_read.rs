//! Any byte string: the reader returns a file or an error, never panics; an
//! accepted file hands out in-bounds tensor slices, describes itself, and
//! survives a rewrite through GgufWriter unchanged, and its small tensors
//! decode through the block formats without panicking.
#![no_main]

use candle_quant::gguf::{describe, GgufFile, GgufWriter};
use candle_quant::quant::{dequantize, QuantType};
use libfuzzer_sys::fuzz_target;

fn rewrite(file: &GgufFile<'_>) -> Vec<u8> {
    let mut writer = GgufWriter::new();
    for (key, value) in file.metadata() {
        writer
            .add_metadata(key, value.to_owned_value())
            .expect("metadata of an accepted file is writable");
    }
    for t in file.tensors() {
        writer
            .add_tensor(&t.info.name, t.info.ggml_type, &t.info.dims, t.data)
            .expect("tensors of an accepted file are writable");
    }
    writer.to_bytes().expect("writing to memory cannot fail")
}

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data) else {
        return;
    };
    let _ = describe(&file);
    for t in file.tensors() {
        assert_eq!(t.data.len() as u64, t.info.size);
        let elems: u64 = t.info.dims.iter().product();
        if t.info.size <= 1 << 16 {
            if let Some(ty) = QuantType::from_ggml_id(t.info.ggml_type.id()) {
                let values = dequantize(ty, t.data, elems as usize)
                    .expect("an accepted tensor has exactly the bytes its type and shape need");
                assert_eq!(values.len() as u64, elems);
            }
        }
    }
    let first = rewrite(&file);
    let reread = GgufFile::from_bytes(&first).expect("our own output must be accepted");
    assert_eq!(rewrite(&reread), first, "write -> read -> write is stable");
});
