"""General capabilities of a model with lm-evaluation-harness: the forgetting check and the regression gate."""
