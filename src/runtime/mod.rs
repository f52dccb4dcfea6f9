//! ONNX Runtime: library discovery, execution providers, session loading, tensor helpers.
