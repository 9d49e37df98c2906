"""The Docker SDK's low-level client (`docker.APIClient`), and one container through it.

sbox speaks to the daemon with the SDK's APIClient only: its high-level layer (DockerClient and
the models) adds a round trip per object (an inspect after each create, a ping) for nothing sbox
uses. Each call here is one request to the daemon.
"""
from __future__ import annotations

from typing import Any

LABEL = "io.sbox.run"  # on every container (and image) sbox makes

# container_config's keys that belong to the HostConfig (the rest go to the container's Config)
HOST_KEYS = frozenset({"auto_remove", "mounts", "tmpfs", "shm_size", "read_only", "cap_drop", "security_opt", "init",
                       "pids_limit", "mem_limit", "network_mode", "dns", "extra_hosts"})


def connect() -> Any:
    """An APIClient for DOCKER_HOST (or the default socket), its API version agreed with the
    daemon: that request is the reachability check. Raises the SDK's errors when there is none.

    Docker's client config (`config.json`) names programs the SDK runs on the host
    (`credsStore`, `credHelpers`: `docker-credential-NAME`), headers it sends and proxies it would
    put into every container, credentials included. So the SDK reads a config only if no sandbox
    could have written the file it would pick and each helper it names is a plain name
    (`_config_outside_sandboxes`), else an empty one of sbox's; no container gets its proxies
    (`use_config_proxy` off), a build sends no credential (sbox builds FROM scratch), and a pull
    looks a helper up only where no sandbox could have put one (`pull`)."""
    import docker  # lazily: the SDK (requests, urllib3) costs ~70 ms to import

    _config_outside_sandboxes()
    client = docker.APIClient(version="auto", timeout=60, **docker.utils.kwargs_from_env())
    client._set_auth_headers = lambda headers: None  # builds: no registry is reached, no helper run
    return client


def _plain(name: object) -> bool:
    """A credential helper's name that PATH alone resolves: letters, digits, `.`, `_`, `-`."""
    return isinstance(name, str) and bool(name) and all(c.isascii() and (c.isalnum() or c in "._-") for c in name)


def _config_outside_sandboxes() -> None:
    """If the config file the SDK would read (DOCKER_CONFIG's, else ~/.docker's, else
    ~/.dockercfg) or its directory lies where a sandbox may write (a project, a venv, sbox's
    cache), as written or resolved, or it names a credential helper with a path (which the SDK
    would run from the working directory), the SDK reads sbox's empty one instead."""
    import os

    from docker.auth import load_config
    from docker.utils.config import find_config_file

    from sbox_shim.trust.written import written_by_sandbox
    from sbox_shim.paths import sbox_dir

    chosen = find_config_file()
    if chosen is None:
        return
    writable = (os.path.realpath(sbox_dir("cache", os.environ)),)
    if any(written_by_sandbox(path, writable) for path in (chosen, os.path.dirname(chosen))):
        _use_empty_config()
        return
    auth = load_config(chosen)
    if not all(_plain(name) for name in [auth.creds_store or "docker", *auth.cred_helpers.values()]):
        _use_empty_config()


def _use_empty_config() -> None:
    """DOCKER_CONFIG: a directory of sbox's state holding `{}` (a directory without a config.json
    would let the SDK fall through to ~/.docker)."""
    import os

    from sbox_shim import kept
    from sbox_shim.paths import sbox_dir

    directory = os.path.join(sbox_dir("state", os.environ), "docker", "empty-config")
    kept.write_bytes(os.path.join(directory, "config.json"), b"{}", prune_old=False)  # 0600 in a 0700 directory
    st = os.lstat(directory)
    if st.st_uid != os.getuid() or st.st_mode & 0o022 or not os.path.isdir(directory) or os.path.islink(directory):
        raise OSError(f"{directory} is not sbox's own")
    os.environ["DOCKER_CONFIG"] = directory


def pull(api: Any, image: str) -> None:
    """Pull `image`, a credential helper found only on PATH's entries no sandbox could fill."""
    import os

    from sbox_shim.backends.dockerhelper import Remote
    from sbox_shim.trust.written import network_path
    from sbox_shim.paths import sbox_dir

    if isinstance(api, Remote):  # the helper does the same
        api.pull(image)
        return
    path = os.environ.get("PATH", os.defpath)
    os.environ["PATH"] = network_path(path, (os.path.realpath(sbox_dir("cache", os.environ)),))
    try:
        api.pull(image)  # the SDK splits off the tag (latest if none)
    finally:
        os.environ["PATH"] = path


def low_level(client: Any) -> Any:
    """The APIClient itself, given it or a DockerClient (as tests hold)."""
    return getattr(client, "api", client)


def create(api: Any, config: dict[str, Any]) -> "Box":
    """Create the container `config` (container_config's keyword arguments) describes."""
    from sbox_shim.backends.dockerhelper import Remote

    if isinstance(api, Remote):  # the SDK makes the request in the helper, from the same arguments
        return Box(api, api.create(config), list(config.get("command") or []))
    host = api.create_host_config(**{k: v for k, v in config.items() if k in HOST_KEYS})
    rest = {k: v for k, v in config.items() if k not in HOST_KEYS}
    made = api.create_container(host_config=host, use_config_proxy=False, **rest)
    return Box(api, str(made["Id"]), list(rest.get("command") or []))


def image_missing(exc: BaseException) -> bool:
    """The SDK's ImageNotFound, raised here or in the helper (dockerhelper.py)."""
    return getattr(exc, "kind", None) == "ImageNotFound" or any(
        cls.__name__ == "ImageNotFound" and cls.__module__ == "docker.errors" for cls in type(exc).__mro__)


def build(api: Any, context: Any, tag: str, labels: dict[str, str]) -> None:
    """Build an image from a tar context; raises RuntimeError with the daemon's message."""
    from sbox_shim.backends.dockerhelper import Remote

    if isinstance(api, Remote):
        api.build(context.getvalue(), tag, labels)
        return
    for chunk in api.build(fileobj=context, custom_context=True, tag=tag, rm=True, labels=labels, decode=True,
                           use_config_proxy=False):
        if isinstance(chunk, dict) and chunk.get("error"):
            raise RuntimeError(str(chunk["error"]).strip())


class Box:
    """One container: the calls dockerio.py makes on it, each one request."""

    def __init__(self, api: Any, container_id: str, command: list[str]) -> None:
        self.api = api
        self.id = container_id
        self.command = command

    def attach_socket(self, params: dict[str, int]) -> Any:
        return self.api.attach_socket(self.id, params=params)

    def start(self) -> None:
        self.api.start(self.id)

    def wait(self) -> dict[str, Any]:
        return dict(self.api.wait(self.id))

    def kill(self, signal: str) -> None:
        self.api.kill(self.id, signal=signal)

    def resize(self, height: int, width: int) -> None:
        self.api.resize(self.id, height=height, width=width)

    def init_pid(self) -> int:
        """The host pid of the container's init (0 when not running)."""
        return int(self.api.inspect_container(self.id)["State"]["Pid"] or 0)

    def remove(self, force: bool = True) -> None:
        self.api.remove_container(self.id, force=force)


def short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]
