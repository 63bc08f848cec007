"""Which layer diverged: a compiled model compared layer by layer with its FP32 ONNX golden.

One table shape whatever the backend (ONNX Runtime, msprobe for an Ascend .om), with msprobe's metrics
and its precision-error rule (docs/reference/diagnosis-interfaces.md).
"""
