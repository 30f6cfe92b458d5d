"""Lambda entry points; each stays thin and builds its runtime on first use."""
