"""The DeepSeekDeployment API: names, constants and (later) typed spec/status models."""
