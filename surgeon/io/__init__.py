"""Models in and out: the Model wrapper, loading, exporting to protobuf, external
weights, and saving with checks. Passes never write files; this layer does."""
