"""tujie privacy: Opacus DP-SGD for any core run (``dp``), a membership-inference audit (``audit``), an identifier
scan of data (``scan``), a privacy report card per run (``report``) and encrypted inference as a service, CKKS
through TenSEAL (``he``)."""

__version__ = "0.1.0"
