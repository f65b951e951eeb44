"""Encrypted inference (CKKS, TenSEAL): a model's owner serves predictions on data it never sees.

- :func:`compile_model` / :func:`compile_run`: a trained ``linear``/``mlp`` network as an :class:`HEModel`
  (affine layers, polynomial activations), refused with the layer named when it cannot be evaluated exactly enough;
- :class:`HEClient`: keys (parameters from the model's depth, ≥ 128-bit security), feature-major encryption of
  many samples per ciphertext, decryption; the secret key never leaves it;
- :func:`create_app` / :func:`serve` / :class:`BackgroundServer`: the HTTP service; :class:`ServiceClient` talks
  to it.
"""

from tujie_privacy.he.client import HEClient, ServiceClient, ServiceError
from tujie_privacy.he.model import Activation, HEModel, compile_model, compile_run, fit_activation
from tujie_privacy.he.params import CKKSParameters, ParameterError, check_context, choose_parameters, context_facts
from tujie_privacy.he.serve import BackgroundServer, free_port, serve, wait_until_serving
from tujie_privacy.he.server import ServiceLimits, create_app

__all__ = [
    "Activation",
    "BackgroundServer",
    "CKKSParameters",
    "HEClient",
    "HEModel",
    "ParameterError",
    "ServiceClient",
    "ServiceError",
    "ServiceLimits",
    "check_context",
    "choose_parameters",
    "compile_model",
    "compile_run",
    "context_facts",
    "create_app",
    "fit_activation",
    "free_port",
    "serve",
    "wait_until_serving",
]
