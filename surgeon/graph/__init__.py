"""Graph primitives every pass shares: walking graphs and subgraphs, editing
wiring, fresh names and node labels, constants and dtypes, the one
shape-inference entry, and a small node builder."""
