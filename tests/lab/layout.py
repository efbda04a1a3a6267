"""Names, addresses and paths of one lab, all derived from a short prefix and a /24."""

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATE_ROOT = Path("/var/lib/xdpfleet-lab")
DEFAULT_INVENTORY = REPO / "inventories" / "lab" / "hosts.yml"
HOST_IFNAME = "eth0"
FIRST_HOST_OCTET = 11
MAX_HOSTS = 254 - FIRST_HOST_OCTET
# Every lab prefix this process named: a test run checks at its end that it left nothing of these labs.
NAMED_PREFIXES = set()


def users_path(prefix: str) -> Path:
    """Each test fixture using the lab holds a shared lock on this file; the last to leave may take the lab down."""
    return STATE_ROOT / f"{prefix}.users"


@dataclass(frozen=True)
class Layout:
    """One lab: the default is xf-* on 198.18.0.0/24; tests may build a second one beside it."""

    prefix: str = "xf"
    subnet: int = 0  # the lab lives in 198.18.<subnet>.0/24, inside the RFC 2544 range

    def __post_init__(self):
        # "<prefix>-client-peer" must fit the 15 characters of an interface name.
        if not re.fullmatch(r"[a-z][a-z0-9]{0,2}", self.prefix):
            raise ValueError(f"lab prefix must be 1-3 lowercase letters/digits: {self.prefix!r}")
        if not 0 <= self.subnet <= 255:
            raise ValueError(f"subnet must be 0..255: {self.subnet}")
        NAMED_PREFIXES.add(self.prefix)

    def address(self, last_octet: int) -> str:
        return f"198.18.{self.subnet}.{last_octet}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br0"

    @property
    def bridge_address(self) -> str:
        return self.address(1)

    @property
    def client_name(self) -> str:
        return f"{self.prefix}-client"

    @property
    def client_address(self) -> str:
        return self.address(2)

    def host_name(self, index: int) -> str:
        return f"{self.prefix}-h{index}"

    def host_address(self, index: int) -> str:
        return self.address(FIRST_HOST_OCTET - 1 + index)

    def host_index(self, name: str):
        """The index of a host name of this lab, None for any other name."""
        match = re.fullmatch(rf"{self.prefix}-h([1-9][0-9]*)", name)
        return int(match.group(1)) if match else None

    @staticmethod
    def peer_ifname(netns: str) -> str:
        """The root-namespace end of a namespace's veth, enslaved to the bridge."""
        return f"{netns}-peer"

    @property
    def state_dir(self) -> Path:
        return STATE_ROOT / self.prefix

    @property
    def lock_path(self) -> Path:
        return STATE_ROOT / f"{self.prefix}.lock"

    @property
    def built_by_tests(self) -> Path:
        """Present while the lab is one that tests built (or rebuilt), so tests take it down again."""
        return self.state_dir / "built-by-tests"

    @property
    def inventory(self) -> Path:
        return DEFAULT_INVENTORY if self == Layout() else self.state_dir / "hosts.yml"

    @property
    def client_key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.state_dir / "authorized_keys"

    def host_dir(self, name: str) -> Path:
        return self.state_dir / name
