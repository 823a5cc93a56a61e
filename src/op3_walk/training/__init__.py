"""The training loop shared by every entry point (CLI, learner node, benchmarks), logging, plots, checkpoints."""
