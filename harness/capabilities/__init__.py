"""General capabilities of a model with lm-evaluation-harness: the forgetting check and the regression gate.

`tasks` says which lm-eval tasks a list of names means (the harness's own offline subsets in `lm_tasks/`,
lm-eval's registry, task YAML files); `evaluate` runs them on a model in memory and keeps every item;
`refs` says which model a reference means and evaluates several, each base loaded once; `stats` pairs two
models' rows item by item and holds their paired statistics and verdict; `regress` is the regression gate
(`harness regress`) and `forgetting` the check of a finished study's trials (`harness forgetting`).
"""
