"""Training data: Parquet shards with their manifest, and the torch dataset that streams them (rules/shards.smk)."""
