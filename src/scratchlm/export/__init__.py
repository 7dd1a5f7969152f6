"""Exports to other runtimes: Hugging Face transformers, GGUF (llama.cpp) and Ollama."""
