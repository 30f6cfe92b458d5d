"""The product's rules, free of I/O: what a message is, how it moves, when to retry."""
