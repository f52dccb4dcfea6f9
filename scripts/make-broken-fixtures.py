#!/usr/bin/env python3
"""Small ONNX fixtures for tests/invalid_models.rs (model folders broken on purpose, and one
that only looks broken).

Pinned versions: onnx==1.23.2 numpy==2.4.6 (the reference venv, models/requirements.txt).
Run from the repository root:

    .venv-ref/bin/python scripts/make-broken-fixtures.py

It rewrites tests/fixtures/models/:

- text_encoder_fp16.onnx, text_encoder_fp32.onnx: stand-in CLIP text encoders for the tiny
  model (input_ids int64[batch,77] -> last_hidden_state [batch,77,32]), the first with a
  float16 output, the second float32. Both compute h[b,i,j] = (ids[b,i] mod 1024) / 1024 * w[j]
  with w[j] = +-2^-(j mod 4), values a float16 holds exactly, so a pipeline that converts
  between components' dtypes correctly makes the same image with either (the tiny UNet is
  float32).

The graphs are a few hundred bytes; the output is byte-identical on every run.
"""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

if onnx.__version__ != "1.23.2" or np.__version__ != "2.4.6":
    sys.exit(f"need onnx 1.23.2 and numpy 2.4.6, have {onnx.__version__} and {np.__version__}")

OUT = Path("tests/fixtures/models")
HIDDEN = 32
SEQ = 77


def text_encoder(out_type: int) -> onnx.ModelProto:
    w = np.array([(-1.0 if j % 2 else 1.0) * 2.0 ** -(j % 4) for j in range(HIDDEN)], dtype=np.float32)
    nodes = [
        helper.make_node("Mod", ["input_ids", "modulus"], ["ids_mod"], fmod=0),
        helper.make_node("Cast", ["ids_mod"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ids_f", "scale"], ["x"]),
        helper.make_node("Unsqueeze", ["x", "axis2"], ["x3"]),
        helper.make_node("Mul", ["x3", "w"], ["h32"]),
    ]
    if out_type == TensorProto.FLOAT16:
        nodes.append(helper.make_node("Cast", ["h32"], ["last_hidden_state"], to=TensorProto.FLOAT16))
    else:
        nodes.append(helper.make_node("Identity", ["h32"], ["last_hidden_state"]))
    graph = helper.make_graph(
        nodes,
        "text_encoder_stand_in",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", SEQ])],
        [helper.make_tensor_value_info("last_hidden_state", out_type, ["batch", SEQ, HIDDEN])],
        initializer=[
            numpy_helper.from_array(np.array(1024, dtype=np.int64), "modulus"),
            numpy_helper.from_array(np.array(1.0 / 1024, dtype=np.float32), "scale"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
            numpy_helper.from_array(w, "w"),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="speedscape scripts/make-broken-fixtures.py",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, ty in [("text_encoder_fp16.onnx", TensorProto.FLOAT16), ("text_encoder_fp32.onnx", TensorProto.FLOAT)]:
        path = OUT / name
        path.write_bytes(text_encoder(ty).SerializeToString(deterministic=True))
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
