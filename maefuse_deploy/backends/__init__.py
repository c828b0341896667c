"""Inference backends, one module per runtime."""
