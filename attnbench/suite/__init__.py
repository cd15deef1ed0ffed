"""The suite: its schema, its checks, the cells it expands to, probing them."""
