"""Unit tests of receiver.py: python3 -m unittest discover -s monitoring/alert-receiver"""

from __future__ import annotations

import sys
import threading
import time
import unittest
from unittest import mock

import receiver


class SlowStdout:
    """A stdout whose every write takes a moment, as a busy pipe's does: it lets threads interleave."""

    def __init__(self):
        self.chunks: list[str] = []

    def write(self, text: str) -> int:
        time.sleep(0.001)
        self.chunks.append(text)
        return len(text)

    def flush(self) -> None:
        pass


class EmitTest(unittest.TestCase):
    def test_concurrent_notifications_print_whole_lines(self):
        out = SlowStdout()
        lines = [f"/alerts/page firing Alert{i} severity=page" for i in range(40)]
        with mock.patch.object(sys, "stdout", out):
            threads = [threading.Thread(target=receiver.emit, args=(line,)) for line in lines]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        self.assertEqual(sorted("".join(out.chunks).splitlines()), sorted(lines))


if __name__ == "__main__":
    unittest.main()
