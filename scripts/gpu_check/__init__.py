"The GPU check's helpers: `run.py` (the orchestrator, standard library only) and `parts.py` (the parts, run in child processes)."
