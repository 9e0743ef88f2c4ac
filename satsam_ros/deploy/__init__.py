"""Deployment artefacts: ONNX export and TensorRT engine building (never imported at run time)."""
