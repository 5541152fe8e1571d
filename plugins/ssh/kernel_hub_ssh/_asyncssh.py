"""asyncssh, imported so that its warnings and chatter stay out of the user's way.

Every module of this plugin imports asyncssh from here, never directly:

- cryptography 51 deprecated DSA, and asyncssh 2.24 touches ``dsa.*`` names in
  its type aliases at import time, which warns five times per process
  (``CryptographyDeprecationWarning: DSA is deprecated``). That one known
  warning is ignored while asyncssh is imported: the category, the message and
  asyncssh's modules are all named, so no other warning is hidden.
- asyncssh logs every connection, authentication and channel at INFO. A host
  that logs at INFO (papermill does) would print about 150 such lines per
  notebook. asyncssh's logger is held at WARNING unless the user asked for
  kernel_hub's own debug logging (``kernel-hub -vv``, or the ``kernel_hub``
  logger at DEBUG), or set a level on the ``asyncssh`` logger themselves.
"""

from __future__ import annotations

import logging
import warnings

from cryptography.utils import CryptographyDeprecationWarning

__all__ = ["asyncssh", "quiet_logging"]


# Filtered while importing only: a filter left in place would outlive the import and
# could hide the same warning from the user's own use of DSA.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message=r"DSA is deprecated",
        category=CryptographyDeprecationWarning,
        module=r"asyncssh(\.|$)",
    )
    import asyncssh

_LOGGER = logging.getLogger("asyncssh")
# The level this module set, so that a level the user set is never touched.
_ours: int | None = None


def quiet_logging() -> None:
    """Hold asyncssh's logger at WARNING unless kernel_hub's debug logging is on.

    Called at import and again before each connection, so that debug logging
    turned on after the import (``kernel-hub -vv``) lets asyncssh speak too.
    """
    global _ours
    if _LOGGER.level not in (logging.NOTSET, _ours):
        return  # the user's own choice
    debug = logging.getLogger("kernel_hub").isEnabledFor(logging.DEBUG)
    level = logging.NOTSET if debug else logging.WARNING
    _LOGGER.setLevel(level)
    _ours = level


quiet_logging()
