"""Training data: Parquet or WebDataset tar shards with their manifest, and the torch dataset that streams them
(rules/shards.smk)."""
