"""A typed stub of the NixOS test driver's API that MusicFS's VM test scripts use.

nixpkgs type-checks every `testScript` with mypy before it runs a VM test (a type error fails the build).
Nixpkgs cannot be fetched here, so `nix/check.sh` runs the same check against this stub: the signatures
below follow nixpkgs' nixos/lib/test-driver (machine.py, driver.py). Add a method here when a script
starts using it, with the driver's own signature.
"""

from typing import ContextManager, Optional, Tuple


class Machine:
    """One VM of the test (`machine`, or a node by its name)."""

    def start(self, allow_reboot: bool = False) -> None: ...

    def succeed(self, *commands: str, timeout: Optional[int] = None) -> str: ...

    def fail(self, *commands: str, timeout: Optional[int] = None) -> str: ...

    def execute(
        self,
        command: str,
        check_return: bool = True,
        check_output: bool = True,
        timeout: Optional[int] = 900,
    ) -> Tuple[int, str]: ...

    def wait_for_unit(self, unit: str, user: Optional[str] = None, timeout: int = 900) -> None: ...

    def wait_until_succeeds(self, command: str, timeout: int = 900) -> str: ...

    def wait_until_fails(self, command: str, timeout: int = 900) -> str: ...

    def wait_for_open_port(self, port: int, addr: str = "localhost", timeout: int = 900) -> None: ...

    def wait_for_file(self, filename: str, timeout: int = 900) -> None: ...

    def systemctl(self, q: str, user: Optional[str] = None) -> Tuple[int, str]: ...

    def copy_from_host(self, source: str, target: str) -> None: ...

    def shutdown(self) -> None: ...

    def crash(self) -> None: ...


def start_all() -> None: ...


def subtest(name: str) -> ContextManager[None]: ...
