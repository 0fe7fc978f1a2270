"""Data preparation for BERT and GPT pretraining: sources -> sentences -> tokenizer -> shards -> instances."""

__version__ = "0.1.0"
