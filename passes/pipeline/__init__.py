"""The lowering pipeline: the one list of built-in passes (:mod:`.builtin_passes`),
the user-editable :class:`~.pass_pipeline.PassPipeline`, running it over a program
(:mod:`.lower_program`, :mod:`.transform_program`), the
checks after each user pass (:mod:`.user_pass_checks`, :mod:`.program_invariants`,
:mod:`.program_outputs`), and what a run hands back (:mod:`.lowering_result`,
:mod:`.lowering_summary`). Public names are re-exported by ``fxdelegate.passes``."""
