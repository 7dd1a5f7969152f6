"""Exports to other runtimes (Hugging Face transformers; GGUF and Ollama to come)."""
