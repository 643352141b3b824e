"""Real architectures built by transformers from configs (on meta, or tiny ones with real values):
their module tree, memory, byte map and the meta round trip."""
