"""What the tests share and are not tests: CI rules, the real `harness` command, servers on loopback,
the smoke runs of the registered experiments, and the snapshots (layouts, fingerprints) they are held to."""
