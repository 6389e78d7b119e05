"""Statistics the harness and `analysis` both use, below both: paired tests and intervals over per-item
scores (`paired`), and the factors a grid varies with their levels (`factors`)."""
