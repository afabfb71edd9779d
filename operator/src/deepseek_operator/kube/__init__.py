"""The only package that talks to the API server; its errors are mapped onto deepseek_operator.errors."""
