"""deepseek-operator: run DeepSeek models on your own GPU cluster with Triton / TensorRT-LLM."""

__version__ = "0.1.0"
