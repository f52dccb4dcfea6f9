//! Tensors at the ONNX Runtime boundary: what a model's inputs look like, and conversions
//! between our f32/i64 arrays and whatever dtype the exported graph wants (fp16 weights,
//! int32 `input_ids`, 0-d or 1-d `timestep`: Optimum versions differ).

use eyre::{bail, eyre};
use half::f16;
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};

/// One input or output of a graph: name, element type and shape (`-1` for dynamic axes).
#[derive(Debug, Clone, PartialEq)]
pub struct IoSpec {
    /// The graph's name for it (`sample`, `encoder_hidden_states`).
    pub name: String,
    /// Its element type; `Undefined` for a value that is not a tensor.
    pub elem: TensorElementType,
    /// Its dimensions, `-1` where dynamic; empty for a scalar (or a non-tensor).
    pub shape: Vec<i64>,
}

impl IoSpec {
    /// Number of dimensions (0 for a scalar).
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// `float32[-1,4,-1,-1]`-style description for error messages.
    pub(crate) fn describe(&self) -> String {
        let dims: Vec<String> = self
            .shape
            .iter()
            .map(|d| {
                if *d < 0 {
                    "?".to_string()
                } else {
                    d.to_string()
                }
            })
            .collect();
        format!("{} {}[{}]", self.name, elem_name(self.elem), dims.join(","))
    }
}

pub(crate) fn elem_name(e: TensorElementType) -> &'static str {
    match e {
        TensorElementType::Float32 => "float32",
        TensorElementType::Float16 => "float16",
        TensorElementType::Int32 => "int32",
        TensorElementType::Int64 => "int64",
        TensorElementType::Float64 => "float64",
        TensorElementType::Bool => "bool",
        TensorElementType::Uint8 => "uint8",
        TensorElementType::Int8 => "int8",
        _ => "other",
    }
}

fn spec(name: &str, ty: &ValueType) -> IoSpec {
    match ty {
        ValueType::Tensor { ty, shape, .. } => IoSpec {
            name: name.to_string(),
            elem: *ty,
            shape: shape.iter().copied().collect(),
        },
        _ => IoSpec {
            name: name.to_string(),
            elem: TensorElementType::Undefined,
            shape: Vec::new(),
        },
    }
}

/// The inputs of a session, in graph order.
pub fn inputs(session: &Session) -> Vec<IoSpec> {
    session
        .inputs()
        .iter()
        .map(|o| spec(o.name(), o.dtype()))
        .collect()
}

/// The outputs of a session, in graph order.
pub fn outputs(session: &Session) -> Vec<IoSpec> {
    session
        .outputs()
        .iter()
        .map(|o| spec(o.name(), o.dtype()))
        .collect()
}

/// A float tensor for an input that wants `elem` (float32 or float16).
pub fn float_input(x: ArrayViewD<f32>, elem: TensorElementType) -> eyre::Result<DynValue> {
    let shape: Vec<usize> = x.shape().to_vec();
    Ok(match elem {
        TensorElementType::Float32 => {
            Tensor::from_array((shape, x.iter().copied().collect::<Vec<f32>>()))?.into_dyn()
        }
        TensorElementType::Float16 => Tensor::from_array((
            shape,
            x.iter().map(|v| f16::from_f32(*v)).collect::<Vec<f16>>(),
        ))?
        .into_dyn(),
        other => bail!(
            "expected a float32 or float16 input, the model wants {}",
            elem_name(other)
        ),
    })
}

/// An integer tensor for an input that wants `elem` (int32, int64, or float for timesteps).
pub(crate) fn int_input(
    values: &[i64],
    shape: &[usize],
    elem: TensorElementType,
) -> eyre::Result<DynValue> {
    let shape = shape.to_vec();
    Ok(match elem {
        TensorElementType::Int64 => Tensor::from_array((shape, values.to_vec()))?.into_dyn(),
        TensorElementType::Int32 => Tensor::from_array((
            shape,
            values
                .iter()
                .map(|v| i32::try_from(*v).map_err(|_| eyre!("{v} does not fit int32")))
                .collect::<Result<Vec<i32>, _>>()?,
        ))?
        .into_dyn(),
        TensorElementType::Float32 => Tensor::from_array((
            shape,
            values.iter().map(|v| *v as f32).collect::<Vec<f32>>(),
        ))?
        .into_dyn(),
        TensorElementType::Float16 => Tensor::from_array((
            shape,
            values
                .iter()
                .map(|v| f16::from_f32(*v as f32))
                .collect::<Vec<f16>>(),
        ))?
        .into_dyn(),
        other => bail!(
            "expected an integer or float input, the model wants {}",
            elem_name(other)
        ),
    })
}

/// A timestep tensor of `shape` filled with `t`: float graphs get `t` as is, integer graphs
/// `t` truncated toward zero (what torch's cast of a float timestep gives).
pub(crate) fn timestep_input(
    t: f32,
    shape: &[usize],
    elem: TensorElementType,
) -> eyre::Result<DynValue> {
    let n = shape.iter().product::<usize>();
    let shape = shape.to_vec();
    Ok(match elem {
        TensorElementType::Float32 => Tensor::from_array((shape, vec![t; n]))?.into_dyn(),
        TensorElementType::Float16 => {
            Tensor::from_array((shape, vec![f16::from_f32(t); n]))?.into_dyn()
        }
        TensorElementType::Int64 | TensorElementType::Int32 => {
            int_input(&vec![t.trunc() as i64; n], &shape, elem)?
        }
        other => bail!(
            "expected an integer or float timestep, the model wants {}",
            elem_name(other)
        ),
    })
}

/// A float output (float32 or float16) as an f32 array.
pub fn float_output<T: ort::value::TensorValueTypeMarker + ?Sized>(
    value: &ort::value::Value<T>,
) -> eyre::Result<ArrayD<f32>> {
    match value.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            ..
        } => {
            let (shape, data) = value.try_extract_tensor::<f32>()?;
            let dims: Vec<usize> = shape.iter().map(|d| *d as usize).collect();
            Ok(ArrayD::from_shape_vec(IxDyn(&dims), data.to_vec())?)
        }
        ValueType::Tensor {
            ty: TensorElementType::Float16,
            ..
        } => {
            let (shape, data) = value.try_extract_tensor::<f16>()?;
            let dims: Vec<usize> = shape.iter().map(|d| *d as usize).collect();
            Ok(ArrayD::from_shape_vec(
                IxDyn(&dims),
                data.iter().map(|v| v.to_f32()).collect(),
            )?)
        }
        other => bail!("expected a float32 or float16 output, got {other}"),
    }
}
