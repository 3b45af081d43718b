"""The pod's capture rules (Istio's istio-iptables, reduced to what meshdev needs) and
applying them.

In the nat table of the pod's network namespace:
- OUTPUT: every TCP connection the app opens goes to the sidecar's outbound port, except the
  sidecar's own (its user id: otherwise its calls to other pods would loop back into itself),
  those to loopback (the app calling itself, the sidecar, Docker's DNS at 127.0.0.11) and the
  excluded ports;
- PREROUTING: every TCP connection arriving at the pod goes to the sidecar's inbound port,
  except those for the excluded ports (the sidecar's admin and its own listeners among them),
  so an app that listens on all interfaces is still reached only through its sidecar.

The rules are added with `iptables-restore --noflush`: the nat table already holds Docker's own
rules for its DNS server, which must stay.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

CHAIN_INBOUND = "MESHDEV_INBOUND"
CHAIN_IN_REDIRECT = "MESHDEV_IN_REDIRECT"
CHAIN_OUTPUT = "MESHDEV_OUTPUT"
CHAIN_REDIRECT = "MESHDEV_REDIRECT"


@dataclass(frozen=True, slots=True)
class CaptureRules:
    proxy_uid: int
    outbound_port: int
    inbound_port: int
    exclude_inbound: tuple[int, ...] = ()
    exclude_outbound: tuple[int, ...] = ()

    def restore_input(self) -> str:
        """The rules as `iptables-restore` reads them."""
        lines = [
            "*nat",
            *(f":{c} - [0:0]" for c in self.chains()),
            f"-A {CHAIN_IN_REDIRECT} -p tcp -j REDIRECT --to-ports {self.inbound_port}",
            f"-A {CHAIN_REDIRECT} -p tcp -j REDIRECT --to-ports {self.outbound_port}",
            f"-A PREROUTING -p tcp -j {CHAIN_INBOUND}",
            *(
                f"-A {CHAIN_INBOUND} -p tcp -m tcp --dport {p} -j RETURN"
                for p in _ports([*self.exclude_inbound, self.inbound_port])
            ),
            f"-A {CHAIN_INBOUND} -p tcp -j {CHAIN_IN_REDIRECT}",
            f"-A OUTPUT -p tcp -j {CHAIN_OUTPUT}",
            f"-A {CHAIN_OUTPUT} -m owner --uid-owner {self.proxy_uid} -j RETURN",
            f"-A {CHAIN_OUTPUT} -o lo -j RETURN",
            f"-A {CHAIN_OUTPUT} -d 127.0.0.0/8 -j RETURN",
            *(
                f"-A {CHAIN_OUTPUT} -p tcp -m tcp --dport {p} -j RETURN"
                for p in _ports(self.exclude_outbound)
            ),
            f"-A {CHAIN_OUTPUT} -j {CHAIN_REDIRECT}",
            "COMMIT",
        ]
        return "\n".join(lines) + "\n"

    @staticmethod
    def chains() -> tuple[str, ...]:
        return (CHAIN_INBOUND, CHAIN_IN_REDIRECT, CHAIN_OUTPUT, CHAIN_REDIRECT)


def _ports(ports: Iterable[int]) -> list[int]:
    return sorted(set(ports))


class CaptureFailed(Exception):
    pass


def apply(rules: CaptureRules, command: str = "iptables-restore") -> None:
    """Install the rules in this process's network namespace (needs CAP_NET_ADMIN); raises
    CaptureFailed with iptables' own words."""
    try:
        done = subprocess.run(
            [command, "--noflush"],
            input=rules.restore_input(),
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except FileNotFoundError as exc:
        raise CaptureFailed(f"{command} is not installed in this image") from exc
    except subprocess.TimeoutExpired as exc:
        raise CaptureFailed(f"{command} did not finish in 30 s") from exc
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
        raise CaptureFailed(f"{command} refused the capture rules: {said}")
