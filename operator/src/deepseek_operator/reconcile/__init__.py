"""The reconcile loop of a DeepSeekDeployment, one file per concern.

- :mod:`.cache` and :mod:`deepseek_operator.kube.watch`: the watch caches (informers);
- :mod:`.queue`: the work queue;
- :mod:`.gather`: facts from the caches (and a due analysis);
- :mod:`.decide` (pure): facts in, writes out, in steps: :mod:`.spec_step`,
  :mod:`.analysis_step`, :mod:`.workloads`, :mod:`.report`, building with :mod:`.revision`;
- :mod:`.write`: the writes, in order;
- :mod:`.controller`: the workers that run gather -> decide -> write.
"""
