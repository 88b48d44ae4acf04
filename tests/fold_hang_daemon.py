"""``ledgerwire run`` with a hang injected in the fold's Kafka transaction, for tests/test_liveness_stack.py.

The first process to reach ``send_offsets_to_transaction`` (no marker file yet) writes the marker and blocks there
forever, as the fold did in issue #13 when a broker stopped answering; later processes run normally.
Usage: python tests/fold_hang_daemon.py MARKER_FILE run --config FILE
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import confluent_kafka

from daemon.source import fold_runner

MARKER = Path(sys.argv[1])


class ProducerHangingOnce(confluent_kafka.Producer):
    def send_offsets_to_transaction(self, *args, **kwargs):
        if not MARKER.exists():
            written = MARKER.with_suffix(".tmp")
            written.write_text(repr(time.time()))
            written.rename(MARKER)  # whole, or not there: the test reads it as soon as it exists
            threading.Event().wait()  # never returns
        return super().send_offsets_to_transaction(*args, **kwargs)


fold_runner.Producer = ProducerHangingOnce

if __name__ == "__main__":
    from daemon.cli import main

    sys.exit(main(sys.argv[2:]))
