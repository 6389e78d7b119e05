"""Evaluation: generation and scoring on held-out items, model runners, OpenAI-compatible endpoints."""
