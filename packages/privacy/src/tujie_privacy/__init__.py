"""tujie privacy: Opacus DP-SGD for any core run, membership-inference audit, TenSEAL encryption.

Skeleton: the package's dependencies are declared and installed; its API arrives with its own issue.
"""

__version__ = "0.1.0"
