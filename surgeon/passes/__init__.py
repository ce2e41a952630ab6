"""The pass library. Each module holds one pass or one family; the table of
built-ins is :data:`surgeon.passes.registry.BUILTIN_PASSES`."""
