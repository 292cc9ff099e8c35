"""Extra networks that change a model per request: LoRA adapters and textual-inversion embeddings (A1111's names)."""
