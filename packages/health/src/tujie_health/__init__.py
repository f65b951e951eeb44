"""tujie health: MONAI imaging, torch-geometric molecular screening, clinical risk models.

Skeleton: the package's dependencies are declared and installed; its API arrives with its own issue.
"""

__version__ = "0.1.0"
