"""The graph as straight-line Python, generated once at load time (:mod:`.plan`), with
each ATen op bound to its cheapest exact callable (:mod:`.op_bindings`)."""
