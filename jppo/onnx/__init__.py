"""The policy as an ONNX model Unity's ML-Agents inference runs.

graph (a small opset-9 graph builder and the layers the actor is made of), actor (the actor,
normalizer and action heads as ML-Agents' exporter writes them; ``export_onnx``).

May import: ``jppo.core``, ``jppo.errors``, ``jppo.files``.
"""
