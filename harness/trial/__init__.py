"""One trial: its runner (`runner.run_trial`, the file to read first), its record and its manifest."""
