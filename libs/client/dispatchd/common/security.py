"""Client credentials for `dispatchctl`, workers and `dispatchd.client`: a bearer token and TLS files.

Options and their environment variables (the same for every tool):

    --token JWT          DISPATCHD_TOKEN
    --token-file PATH    DISPATCHD_TOKEN_FILE   re-read for every call/stream (rotated tokens)
    --ca PATH            DISPATCHD_CA           CA that signed the server's certificate; turns TLS on
    --cert PATH          DISPATCHD_CERT         client certificate (mTLS)
    --key PATH           DISPATCHD_KEY          its private key
    --server-name NAME   DISPATCHD_SERVER_NAME  expected name in the server's certificate (default: the host)

Files are read when a channel is opened, so a worker picks up rotated certificates when it
reconnects. Every channel gets the options of dispatchd.common.channels (round_robin,
keepalive, reconnect backoff, no proxy for loopback) under the caller's own. The token
travels as `authorization: Bearer <token>` metadata; without TLS
it is sent in the clear, which is only acceptable on a development machine.

gRPC is imported only when a channel is made, so the worker CLI can parse its options
before gRPC is loaded.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dispatchd.common import channels

if TYPE_CHECKING:
    import grpc

ENV = {
    "token": "DISPATCHD_TOKEN",
    "token_file": "DISPATCHD_TOKEN_FILE",
    "ca": "DISPATCHD_CA",
    "cert": "DISPATCHD_CERT",
    "key": "DISPATCHD_KEY",
    "server_name": "DISPATCHD_SERVER_NAME",
}


class CredentialsError(ValueError):
    """The client's credential options are inconsistent or a file cannot be read."""


@dataclass(frozen=True)
class ClientSecurity:
    token: str | None = None
    token_file: Path | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if self.token and self.token_file:
            raise CredentialsError("give a token or a token file, not both")
        if (self.cert is None) != (self.key is None):
            raise CredentialsError("a client certificate needs its key: give both --cert and --key")
        if self.cert is not None and self.ca is None:
            raise CredentialsError("a client certificate needs TLS: give --ca as well")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientSecurity:
        env = os.environ if env is None else env

        def path(name: str) -> Path | None:
            value = env.get(ENV[name], "")
            return Path(value) if value else None

        return cls(
            token=env.get(ENV["token"]) or None,
            token_file=path("token_file"),
            ca=path("ca"),
            cert=path("cert"),
            key=path("key"),
            server_name=env.get(ENV["server_name"]) or None,
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ClientSecurity:
        """From options added by `add_arguments` (they default to the environment)."""
        return cls(
            token=getattr(args, "token", None) or None,
            token_file=_path(getattr(args, "token_file", None)),
            ca=_path(getattr(args, "ca", None)),
            cert=_path(getattr(args, "cert", None)),
            key=_path(getattr(args, "key", None)),
            server_name=getattr(args, "server_name", None) or None,
        )

    @property
    def tls(self) -> bool:
        return self.ca is not None

    def bearer(self) -> str | None:
        if self.token:
            return self.token
        if self.token_file is not None:
            try:
                token = self.token_file.read_text().strip()
            except OSError as exc:
                raise CredentialsError(f"cannot read the token file {self.token_file}: {exc.strerror}") from None
            if not token:
                raise CredentialsError(f"the token file {self.token_file} is empty")
            return token
        return None

    def metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        token = self.bearer()
        return (("authorization", f"Bearer {token}"),) if token else ()

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        if self.ca is None:
            return None
        import grpc

        try:
            root = self.ca.read_bytes()
            chain = self.cert.read_bytes() if self.cert else None
            key = self.key.read_bytes() if self.key else None
        except OSError as exc:
            raise CredentialsError(f"cannot read {exc.filename}: {exc.strerror}") from None
        return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)

    def channel_options(
        self, target: str, options: list[tuple[str, Any]] | None = None, profile: channels.Profile = channels.CALLS
    ) -> list[tuple[str, Any]]:
        """The shared options for `target`, overridden by `options` (one value per key)."""
        merged = dict(channels.options(target, profile))
        merged.update(options or [])
        if self.server_name and self.tls:
            merged["grpc.ssl_target_name_override"] = self.server_name
        return list(merged.items())

    def sync_channel(
        self, target: str, options: list[tuple[str, Any]] | None = None, profile: channels.Profile = channels.CALLS
    ) -> grpc.Channel:
        import grpc

        opts = self.channel_options(target, options, profile)
        credentials = self.channel_credentials()
        if credentials is None:
            return grpc.insecure_channel(target, options=opts)
        return grpc.secure_channel(target, credentials, options=opts)

    def aio_channel(
        self, target: str, options: list[tuple[str, Any]] | None = None, profile: channels.Profile = channels.CALLS
    ) -> grpc.aio.Channel:
        import grpc

        opts = self.channel_options(target, options, profile)
        credentials = self.channel_credentials()
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=opts)
        return grpc.aio.secure_channel(target, credentials, options=opts)


def _path(value: object) -> Path | None:
    return Path(str(value)) if value else None


# Each option: its metavar and help; its name and environment variable come from ENV.
_OPTIONS = {
    "token": ("JWT", "bearer token"),
    "token_file": ("PATH", "file holding the bearer token, re-read for each call"),
    "ca": ("PATH", "CA of the server certificate; TLS on"),
    "cert": ("PATH", "client certificate for mTLS"),
    "key": ("PATH", "its private key"),
    "server_name": ("NAME", "name expected in the server certificate"),
}


def add_arguments(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """--token, --token-file, --ca, --cert, --key, --server-name (defaults from the environment)."""
    group = parser.add_argument_group("authentication and TLS")
    for name, (metavar, summary) in _OPTIONS.items():
        group.add_argument(
            "--" + name.replace("_", "-"),
            default=argparse.SUPPRESS if suppress else os.environ.get(ENV[name]) or None,
            metavar=metavar,
            help=f"{summary} (env {ENV[name]})",
        )
