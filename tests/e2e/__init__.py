"""End-to-end tests: real runs through the CLI, servers and storages (marked slow: their own CI step)."""
