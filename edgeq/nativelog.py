"""Keep TensorFlow's native (C++) log lines off the user's terminal: :mod:`edgeq_device.run.nativelog`'s blocks.

File descriptor 2 is swapped in one place for the whole process, the board package's
:mod:`edgeq_device.run.nativelog` (one lock, one depth count), which the TFLite runners use too;
edgeq's calls that import or run TensorFlow run inside :func:`quiet_native_logs`. See that
module for where the lines go, ``EDGEQ_VERBOSE=1`` and :func:`show_native_logs`.
"""

from __future__ import annotations

from edgeq_device.run.nativelog import native_logs_shown, quiet_native_logs, show_native_logs

__all__ = ["native_logs_shown", "quiet_native_logs", "show_native_logs"]
