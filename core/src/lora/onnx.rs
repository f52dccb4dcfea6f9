//! The part of an ONNX file run-time LoRA reads: the graph's nodes (name, operator, inputs,
//! integer attributes) and its initializers (name, shape, element type, and where the bytes
//! are: inside the file or in an external-data file beside it). Decoded with prost from the
//! message layout of onnx.proto (only the fields used here; the rest is skipped), from a
//! memory map, so tensors stored inside the file are not copied until one is read.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use eyre::{WrapErr, eyre};
use prost::Message;
use prost::bytes::Bytes;

use crate::error::Fixable;

/// `ModelProto`: only its graph.
#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

/// `GraphProto`: nodes and initializers.
#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
}

/// `NodeProto`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub(crate) input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub(crate) output: Vec<String>,
    #[prost(string, tag = "3")]
    pub(crate) name: String,
    #[prost(string, tag = "4")]
    pub(crate) op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

impl NodeProto {
    /// The integer attribute `name` (`transB` of a Gemm), if set.
    pub(crate) fn int_attr(&self, name: &str) -> Option<i64> {
        self.attribute.iter().find(|a| a.name == name).map(|a| a.i)
    }
}

/// `AttributeProto`: name and integer value only.
#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, tag = "3")]
    i: i64,
}

/// `StringStringEntryProto` (external-data locations).
#[derive(Clone, PartialEq, Message)]
struct Entry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// `TensorProto`.
#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    int32_data: Vec<i32>,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "bytes", tag = "9")]
    raw_data: Bytes,
    #[prost(message, repeated, tag = "13")]
    external_data: Vec<Entry>,
    #[prost(int32, tag = "14")]
    data_location: i32,
}

/// The element types a LoRA target may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elem {
    F32,
    F16,
}

impl Elem {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Elem::F32 => "float32",
            Elem::F16 => "float16",
        }
    }
}

/// Where an initializer's bytes are.
#[derive(Debug, Clone)]
enum Data {
    /// Inside the graph file (a slice of its memory map), raw little-endian.
    Raw(Bytes),
    /// In the typed fields (`float_data`, or `int32_data` holding float16 bit patterns).
    Floats(Vec<f32>),
    Halves(Vec<u16>),
    /// In an external-data file: (file, offset, length).
    External(PathBuf, u64, u64),
}

/// One initializer: what fusion needs to read and replace it.
#[derive(Debug, Clone)]
pub(crate) struct Initializer {
    pub(crate) name: String,
    pub(crate) dims: Vec<usize>,
    /// `None`: an element type fusion does not handle (its ONNX code kept for messages).
    pub(crate) elem: Result<Elem, i32>,
    data: Data,
}

impl Initializer {
    /// Number of elements.
    pub(crate) fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// Its values as f32 (float16 widened exactly).
    pub(crate) fn read_f32(&self) -> eyre::Result<Vec<f32>> {
        let n = self.len();
        let elem = self
            .elem
            .map_err(|code| eyre!("initializer {} has ONNX element type {code}", self.name))?;
        let width = match elem {
            Elem::F32 => 4,
            Elem::F16 => 2,
        };
        let bytes: Vec<u8>;
        let raw: &[u8] = match &self.data {
            Data::Floats(v) => return Ok(v.clone()),
            Data::Halves(v) => {
                return Ok(v
                    .iter()
                    .map(|&h| half::f16::from_bits(h).to_f32())
                    .collect());
            }
            Data::Raw(b) => b,
            Data::External(file, offset, length) => {
                bytes = read_at(file, *offset, *length)?;
                &bytes
            }
        };
        if raw.len() != n * width {
            return Err(eyre!(
                "initializer {} holds {} bytes; its shape {:?} of {} needs {}",
                self.name,
                raw.len(),
                self.dims,
                elem.name(),
                n * width
            ));
        }
        Ok(match elem {
            Elem::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Elem::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        })
    }
}

fn read_at(file: &Path, offset: u64, length: u64) -> eyre::Result<Vec<u8>> {
    let f = File::open(file).fix_err_io(file)?;
    let mut buf = vec![0u8; length as usize];
    f.read_exact_at(&mut buf, offset)
        .wrap_err_with(|| format!("reading {length} bytes at {offset} of {}", file.display()))?;
    Ok(buf)
}

trait IoFix<T> {
    fn fix_err_io(self, file: &Path) -> eyre::Result<T>;
}

impl<T> IoFix<T> for std::io::Result<T> {
    fn fix_err_io(self, file: &Path) -> eyre::Result<T> {
        self.map_err(|e| {
            eyre::Report::new(Fixable::new(
                format!("cannot read {}: {e}", file.display()),
                "check the model folder is complete (`speedscape models verify FOLDER`)",
            ))
        })
    }
}

/// A graph's nodes and initializers.
pub(crate) struct Graph {
    pub(crate) nodes: Vec<NodeProto>,
    pub(crate) initializers: Vec<Initializer>,
}

/// ONNX's element type codes.
const FLOAT: i32 = 1;
const FLOAT16: i32 = 10;

impl Graph {
    /// Reads `file`'s graph (memory-mapped; external data is located, not read).
    pub(crate) fn read(file: &Path) -> eyre::Result<Self> {
        let f = File::open(file).fix_err_io(file)?;
        // SAFETY: the map is read-only and lives as long as the Bytes slices into it; a model
        // file changed under a running session is outside what any reader can guard against.
        let map = unsafe { memmap2::Mmap::map(&f) }.fix_err_io(file)?;
        let model = ModelProto::decode(Bytes::from_owner(map)).map_err(|e| {
            Fixable::new(
                format!("{} is not a readable ONNX graph ({e})", file.display()),
                "re-export the component, or check the file with `speedscape models verify FOLDER`",
            )
        })?;
        let graph = model.graph.unwrap_or_default();
        let dir = file.parent().unwrap_or(Path::new("."));
        let initializers = graph
            .initializer
            .into_iter()
            .map(|t| initializer(t, dir))
            .collect();
        Ok(Graph {
            nodes: graph.node,
            initializers,
        })
    }
}

fn initializer(t: TensorProto, dir: &Path) -> Initializer {
    let elem = match t.data_type {
        FLOAT => Ok(Elem::F32),
        FLOAT16 => Ok(Elem::F16),
        other => Err(other),
    };
    let data = if t.data_location == 1 {
        let get = |k: &str| {
            t.external_data
                .iter()
                .find(|e| e.key == k)
                .map(|e| e.value.clone())
        };
        let location = get("location").unwrap_or_default();
        let offset = get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
        let length = get("length")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                let width = if t.data_type == FLOAT16 { 2 } else { 4 };
                t.dims.iter().product::<i64>().max(0) as u64 * width
            });
        Data::External(dir.join(location), offset, length)
    } else if !t.raw_data.is_empty() {
        Data::Raw(t.raw_data)
    } else if t.data_type == FLOAT16 {
        Data::Halves(t.int32_data.iter().map(|&v| v as u16).collect())
    } else {
        Data::Floats(t.float_data)
    };
    Initializer {
        name: t.name,
        dims: t.dims.iter().map(|&d| d.max(0) as usize).collect(),
        elem,
        data,
    }
}

/// Test graphs written from scratch: nodes (operator, name, inputs) and float32 initializers.
#[cfg(test)]
pub(crate) fn encode_graph(
    nodes: &[(&str, &str, &[&str])],
    initializers: &[(&str, Vec<i64>, Vec<f32>)],
) -> Vec<u8> {
    let model = ModelProto {
        graph: Some(GraphProto {
            node: nodes
                .iter()
                .map(|(op, name, inputs)| NodeProto {
                    input: inputs.iter().map(|s| s.to_string()).collect(),
                    output: vec![format!("{name}_out")],
                    name: name.to_string(),
                    op_type: op.to_string(),
                    attribute: Vec::new(),
                })
                .collect(),
            initializer: initializers
                .iter()
                .map(|(name, dims, values)| TensorProto {
                    dims: dims.clone(),
                    data_type: FLOAT,
                    name: name.to_string(),
                    raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    ..Default::default()
                })
                .collect(),
        }),
    };
    model.encode_to_vec()
}
