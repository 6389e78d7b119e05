"""Building a dataset by hand: draft outputs with a model (`draft`), review every pair in a browser (`server`).

Above `data` (the audit log and the derived dataset live there, where a trial reads them) and `evaluation`
(the endpoint a draft calls); called by the CLI."""
