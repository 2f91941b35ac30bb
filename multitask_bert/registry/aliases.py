"""The registered model's default name and the aliases its versions move between.

Every new version gets ``challenger``; ``champion`` moves to it only when the promotion rule
(:mod:`multitask_bert.registry.promotion`) says so.
"""

CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_MODEL_NAME = "multitask-bert"
