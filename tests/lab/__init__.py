"""The veth-connected lab fleet: `python -m tests.lab up --hosts N | down | status`, or `Lab.up(n)`."""

from .fleet import Client, Host, Lab, Result
from .layout import Layout

__all__ = ["Client", "Host", "Lab", "Layout", "Result"]
