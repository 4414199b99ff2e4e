"""Dataset sources: ``prepare`` and ``synthesize`` for every task on one public release (mixins)."""
