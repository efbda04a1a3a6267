"""Running a function of the collection inside a network namespace the test made, from the test's process."""

import os
from concurrent.futures import ThreadPoolExecutor


def in_namespace(namespace, function, *args):
    """Runs function in a throwaway thread moved into the namespace (setns moves the calling thread alone)."""
    def inside():
        with open("/run/netns/" + namespace) as handle:
            os.setns(handle.fileno(), os.CLONE_NEWNET)
        return function(*args)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(inside).result()
