"""PEM text handed to the ssl module, which loads certificates and keys from files only.

A key must not reach a disk: on Linux it goes through an anonymous in-memory file (memfd)
closed once read; elsewhere through a private temporary file removed at once.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def in_memory(text: str) -> Iterator[str]:
    """A path ssl can open that holds `text`, gone when the block ends: an anonymous memory
    file on Linux (never on a disk), else a private temporary file."""
    data = text.encode("ascii", "replace")
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fd = memfd_create("meshdev-workload-cert", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, data)
            # ssl reads the path from its start, through a file of its own.
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="meshdev-") as folder:  # pragma: no cover (Linux)
        path = os.path.join(folder, "pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        yield path
