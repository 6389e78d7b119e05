"""Export: merged models, GGUF files for llama.cpp, the quantization delta, Hub-ready folders."""
