"""Training and export (the `train` extra: torch, sentence-transformers, optimum): the
two-stage fine-tuning pipeline, its data, its losses and ONNX export. Nothing on the ingest
or query path imports this package."""
