//! Prompt → text embeddings → denoise loop → VAE decode.
