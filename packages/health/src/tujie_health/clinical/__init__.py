"""Clinical risk prediction on patient tables: an MLP through the core Trainer with standardisation inside the
model, calibration, a decision threshold for a target sensitivity, baselines in the report and per-feature
attributions for one patient.

>>> from tujie_health.clinical import RiskModel, train_risk
>>> result, summary = train_risk(target_sensitivity=0.95)                        # doctest: +SKIP
>>> RiskModel.load(result.run_dir).explain(record).top(5)                       # doctest: +SKIP
"""

from tujie_core.plain import PlainModel, plain_model
from tujie_health.clinical.data import Column, TableSchema, patients
from tujie_health.clinical.risk import Explanation, RiskModel, RiskSummary, finish_risk_run, train_risk

__all__ = [
    "Column",
    "Explanation",
    "PlainModel",
    "RiskModel",
    "RiskSummary",
    "TableSchema",
    "finish_risk_run",
    "patients",
    "plain_model",
    "train_risk",
]
