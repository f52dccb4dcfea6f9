//! The model folder (Optimum ONNX layout), UNet variants and the tokenizer.
