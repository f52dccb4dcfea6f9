//! A copy of the embedded tiny model with some float weights overwritten (NaN, Inf), to see what
//! a run does with a model that produces non-finite values. The ONNX files are patched in place:
//! just enough protobuf is read to find an initializer's raw bytes by name.

use std::path::{Path, PathBuf};

/// The tiny model's folder.
pub fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny")
}

/// One protobuf field: number, and its payload (the bytes of a LEN field, else empty).
struct Field {
    number: u64,
    /// Byte range of a LEN payload within the buffer.
    payload: Option<std::ops::Range<usize>>,
}

fn varint(b: &[u8], i: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = b[*i];
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    v
}

/// The fields of the message in `b[range]`, in order.
fn fields(b: &[u8], range: std::ops::Range<usize>) -> Vec<Field> {
    let mut out = Vec::new();
    let mut i = range.start;
    while i < range.end {
        let key = varint(b, &mut i);
        let (number, wire) = (key >> 3, key & 7);
        let payload = match wire {
            0 => {
                varint(b, &mut i);
                None
            }
            1 => {
                i += 8;
                None
            }
            2 => {
                let len = varint(b, &mut i) as usize;
                i += len;
                Some(i - len..i)
            }
            5 => {
                i += 4;
                None
            }
            other => panic!("protobuf wire type {other} is not used by ONNX files"),
        };
        out.push(Field { number, payload });
    }
    out
}

/// The byte range of initializer `name`'s `raw_data` in an ONNX model file's bytes
/// (ModelProto.graph = 7, GraphProto.initializer = 5, TensorProto.name = 8, .raw_data = 9).
pub fn initializer_bytes(model: &[u8], name: &str) -> std::ops::Range<usize> {
    let graph = fields(model, 0..model.len())
        .into_iter()
        .find(|f| f.number == 7)
        .and_then(|f| f.payload)
        .expect("a ModelProto with a graph");
    for init in fields(model, graph)
        .into_iter()
        .filter(|f| f.number == 5)
        .filter_map(|f| f.payload)
    {
        let tensor = fields(model, init);
        let is_it = tensor.iter().any(|f| {
            f.number == 8
                && f.payload
                    .clone()
                    .is_some_and(|r| &model[r] == name.as_bytes())
        });
        if is_it {
            return tensor
                .iter()
                .find(|f| f.number == 9)
                .and_then(|f| f.payload.clone())
                .unwrap_or_else(|| panic!("initializer {name} keeps no raw_data in the file"));
        }
    }
    panic!("no initializer {name}")
}

/// A float32 initializer to overwrite: component folder, initializer name, the value.
pub struct Poison<'a> {
    pub component: &'a str,
    pub initializer: &'a str,
    pub value: f32,
}

/// A temporary copy of the tiny model with each poisoned initializer's every value set to its
/// value. Poisoned components are copied; everything else is linked.
pub fn poisoned_model(poisons: &[Poison]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(tiny()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let to = dir.path().join(&name);
        if poisons.iter().any(|p| name == p.component) {
            std::fs::create_dir(&to).unwrap();
            for f in std::fs::read_dir(entry.path()).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
            }
        } else {
            std::os::unix::fs::symlink(entry.path(), &to).unwrap();
        }
    }
    for p in poisons {
        let file = dir.path().join(p.component).join("model.onnx");
        let mut bytes = std::fs::read(&file).unwrap();
        let range = initializer_bytes(&bytes, p.initializer);
        assert_eq!(range.len() % 4, 0, "{} is float32", p.initializer);
        for chunk in bytes[range].chunks_exact_mut(4) {
            chunk.copy_from_slice(&p.value.to_le_bytes());
        }
        std::fs::write(&file, bytes).unwrap();
    }
    dir
}

/// Replaces `manifest.json` of a poisoned copy by one whose `key` (a JSON pointer) is `value`.
pub fn set_manifest(model: &Path, pointer: &str, value: serde_json::Value) {
    let file = model.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    *m.pointer_mut(pointer).expect("the manifest has that key") = value;
    // The copy links to the original: replace the link, never write through it.
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, serde_json::to_string_pretty(&m).unwrap()).unwrap();
}
