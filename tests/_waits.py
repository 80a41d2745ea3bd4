"""Polling helper shared by the tests (generous deadlines: machines are noisy)."""

import time


def wait_until(predicate, timeout=30.0, interval=0.01):
    """Poll ``predicate`` until it is truthy or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
