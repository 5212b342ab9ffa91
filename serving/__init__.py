"""Serving: the model registry, ONNX runtime, KServe V2 gateway with activator, autoscaler, revisions and traffic."""

from serving.registry import ModelCard, ModelRegistry, TensorSpec

__all__ = ["ModelCard", "ModelRegistry", "TensorSpec"]
