"""Compiling regions once: the content key (:mod:`.region_key`), the local folder
(:mod:`.local_cache`), the Redis store (:mod:`.remote_cache`), the two read as one
(:mod:`.tiered_cache`), compiles split across machines (:mod:`.fleet_compile`) and
across worker processes (:mod:`.parallel_compile`, :mod:`.compile_worker`)."""
