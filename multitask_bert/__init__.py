"""multitask-bert: fine-tune one shared BERT-family encoder on several NLP tasks at once."""

from __future__ import annotations

import os

__version__ = "0.1.0"

# Nothing at run time reaches the network: Hugging Face libraries stay offline and the
# tracking libraries send no telemetry. A user with network access can set HF_HUB_OFFLINE=0
# (and HF_DATASETS_OFFLINE=0) to name Hub models and datasets.
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)
