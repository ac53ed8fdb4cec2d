"""The agent's one context object: the node (config, index), accounts, the caller, where SSH keys go."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from storage.config.settings import ConfigError, load_config
from storage.index.accounts import Accounts
from storage.node import Node

from .protocol import UNAVAILABLE, RPCError
from .roles import ADMIN

log = logging.getLogger(__name__)

AUTHORIZED_KEYS_ENV = "PACSDECK_AUTHORIZED_KEYS"
EXECUTABLE_ENV = "PACSDECK_EXECUTABLE"


@dataclass(frozen=True)
class Caller:
    """Who is calling: a user named by --as, or the local OS account that owns the node."""

    name: str
    role: str | None  # None: may call only the open rpc.* methods
    reason: str = ""  # why there is no role, for the forbidden message


def _os_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def default_authorized_keys() -> Path:
    """~/.ssh/authorized_keys of the OS user running the agent: the node account when run by sshd."""
    try:
        home = Path(pwd.getpwuid(os.geteuid()).pw_dir)
    except KeyError:
        home = Path.home()
    return home / ".ssh" / "authorized_keys"


def find_executable() -> str | None:
    """The `pacsdeck` launcher the forced command should run, as an absolute path (sshd's PATH is bare)."""
    explicit = os.environ.get(EXECUTABLE_ENV)
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "pacsdeck"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("pacsdeck")
    return str(Path(found).absolute()) if found else None


class AgentContext:
    """Everything a method needs, opened once per agent process; a broken node config is reported per call."""

    def __init__(
        self,
        config_path: str | os.PathLike,
        as_user: str | None = None,
        authorized_keys: str | os.PathLike | None = None,
    ):
        self.config_path = Path(config_path).expanduser().absolute()
        self.as_user = as_user
        keys = authorized_keys or os.environ.get(AUTHORIZED_KEYS_ENV)
        self.authorized_keys = Path(keys).expanduser().absolute() if keys else default_authorized_keys()
        self.started_at = time.time()
        self.node: Node | None = None
        self.accounts: Accounts | None = None
        self.broken: str | None = None
        self.cache: dict = {}  # per-process memo for methods (e.g. the node's listener pid)
        try:
            config = load_config(self.config_path)
            if not config.index.exists():
                raise ConfigError(
                    f"{config.index}: no index; initialise the node with `pacsdeck node init --dir {config.node_dir}`"
                )
            self.node = Node(config)
            self.accounts = Accounts(self.node.index)
        except (ConfigError, OSError, RuntimeError) as err:
            self.broken = f"the node is not usable: {err}"
            log.error("%s", self.broken)
        self._local = self._local_caller()

    def _local_caller(self) -> Caller:
        name = f"local:{_os_user()}"
        try:
            owner = self.config_path.stat().st_uid
        except OSError:
            owner = None
        # The account that owns node.yaml can edit it and the index anyway; root can do anything.
        if os.geteuid() == 0 or os.geteuid() == owner:
            return Caller(name, ADMIN)
        return Caller(name, None, f"{name} does not own {self.config_path}; connect with --as USER")

    def caller(self) -> Caller:
        """Read per call, so a role change or a removed user applies to open sessions at once."""
        if self.as_user is None:
            return self._local
        if self.accounts is None:
            return Caller(self.as_user, None, self.broken or "no accounts")
        role = self.accounts.role(self.as_user)
        if role is None:
            return Caller(self.as_user, None, f"no such user {self.as_user!r}")
        return Caller(self.as_user, role)

    def require_node(self) -> Node:
        if self.node is None:
            raise RPCError(UNAVAILABLE, self.broken or "the node is not usable")
        return self.node

    def require_accounts(self) -> Accounts:
        self.require_node()
        return self.accounts
