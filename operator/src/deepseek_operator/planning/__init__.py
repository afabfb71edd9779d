"""Planning: what a model needs and where it goes (pure functions)."""

from deepseek_operator.planning.plan import Plan, plan_deployment

__all__ = ["Plan", "plan_deployment"]
