"""The pass framework: the registry, parameter declarations (spec), the shared
Selector, PassResult, the runner and ``expect:``. The built-in passes live in
:mod:`surgeon.passes.builtin`."""
