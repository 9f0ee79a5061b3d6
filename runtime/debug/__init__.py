"""Finding what is wrong or slow: a per-step numerics bisect (:mod:`.compare`),
per-node timings (:mod:`.profile`) and peak allocator bytes (:mod:`.memory`)."""
