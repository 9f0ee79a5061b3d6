"""CUDA graphs: which nodes can be recorded (:mod:`.capture_plan`), recording and
replaying them (:mod:`.graph_capture`, :mod:`.cuda_graph_runner`), their options
(:mod:`.cuda_graph_options`) and the report's section (:mod:`.cuda_graph_report`)."""
