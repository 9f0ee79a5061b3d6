"""The .pt2 archive: writing and reading it (:mod:`.archive_io`), checking its members
before anything is read (:mod:`.archive_checks`), its memory-mapped weights
(:mod:`.archive_payloads`), weights shared with region programs
(:mod:`.archive_shared_weights`) and its portable input specs (:mod:`.archive_specs`)."""
