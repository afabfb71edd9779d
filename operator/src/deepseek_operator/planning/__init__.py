"""Planning: what a model needs and where it goes (pure functions).

catalog -> sizing -> placement (-> :class:`~deepseek_operator.planning.types.Plan`), with
gpus, inventory and nccl beside them; :mod:`~deepseek_operator.planning.types` holds the data.
"""
