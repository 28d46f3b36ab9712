"""Run IO shared by both loops: everything about results/<run-id>/.

settings (RunSettings from an ML-Agents YAML), launch (what the command line hands a loop),
folder (start, resume or overwrite, decided before any write), checkpoint, summaries
(TensorBoard, progress.csv, curves, one summary row), progress (the console), sweep, session
(the run's beginning: folder, resume and its checks, cadence), report (the run's end: curve,
ONNX models, table, run_info.json).

May import: ``jppo.core``, ``jppo.distributed``, ``jppo.onnx``, ``jppo.errors``,
``jppo.files``, ``jppo.interrupts``. Never a loop: the loops import this.
"""
