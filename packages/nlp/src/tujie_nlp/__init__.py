"""tujie NLP: BERT-family fine-tuning on the tujie core trainer.

Skeleton: the package's dependencies are declared and installed; its API arrives with its own issue.
"""

__version__ = "0.1.0"
