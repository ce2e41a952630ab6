"""The built-in passes, one family per module. A module here imports the graph
layer and the pass framework, never another module of this folder; the table of
built-ins is :data:`surgeon.passes.registry.BUILTIN_PASSES`."""
