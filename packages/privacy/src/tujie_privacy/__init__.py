"""tujie privacy: Opacus DP-SGD for any core run, membership-inference audit, TenSEAL encryption.

Built so far: ``tujie_privacy.scan`` (direct identifiers in data, with checksums, and redaction). DP-SGD, the
membership-inference audit and the report card arrive with issue 11.
"""

__version__ = "0.1.0"
