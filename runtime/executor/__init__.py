"""Running one call: the generated entry function (:mod:`.entry`), the input checks
it makes (:mod:`.input_check`), and :class:`~.program_executor.ProgramExecutor`, which
ties the plan, CUDA graphs and profiling together."""
