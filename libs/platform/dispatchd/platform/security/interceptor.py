"""The one server interceptor that enforces security on every service.

For every call, before the handler runs:
1. on a TLS port, a connection older than TLS 1.3 is refused (UNAUTHENTICATED);
2. public methods (health) pass; with authentication off every call passes, as before;
3. the bearer token is verified (UNAUTHENTICATED: missing, malformed, expired, ...);
4. the authorization table must grant one of the token's roles (PERMISSION_DENIED);
5. for `WorkerService.Connect`: the identity may hold at most `max_streams_per_identity` open
   streams (RESOURCE_EXHAUSTED), and the registration's worker_id must be the token's `sub`
   and, with a client certificate, one of the certificate's identities (PERMISSION_DENIED),
   unless the caller has the `service` role. A fresh token sent later on that stream is
   checked by the same code (`Call.renewal`, see `renewal`).

It also makes undecodable request bytes an INVALID_ARGUMENT (gRPC itself would answer
UNKNOWN), hands the decision to handlers through `access.current`, and writes one audit
line per call (streams: at open and at close).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from dispatchd.platform.decoding import Malformed, refusal
from dispatchd.platform.decoding import tolerant as _tolerant
from dispatchd.platform.interceptors import (
    Handler,
    HandlerInterceptor,
    Wrappers,
    metadata_of,
    relay,
    rewrap,
    status_of_call,
)
from dispatchd.platform.methods import HEALTH_SERVICE, WORKER_SERVICE, rule_for
from dispatchd.platform.security import audit, renewal
from dispatchd.platform.security.access import Access, current
from dispatchd.platform.security.renewal import RefreshRefused, Renewal
from dispatchd.platform.security.roles import Role, Rule, Scope
from dispatchd.platform.security.settings import SecurityConfig
from dispatchd.platform.security.tls import TLS13, PeerCertificate, peer_certificate, tls_version
from dispatchd.platform.security.tokens import Principal, TokenError, bearer_token
from dispatchd.platform.streams import await_first_message

Context = grpc.aio.ServicerContext[Any, Any]

CONNECT = f"/{WORKER_SERVICE}/Connect"
UNAUDITED = (f"/{HEALTH_SERVICE}/",)
MAX_WORKER_ID_IN_LOG = 128


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _describe(principal: Principal) -> str:
    roles = ", ".join(sorted(principal.roles)) or "none"
    return f"subject {principal.subject!r} (roles: {roles})"


def _short(method: str) -> str:
    service, _, name = method.lstrip("/").rpartition("/")
    return f"{service.rsplit('.', 1)[-1]}.{name}" if service else method


def _outcome(context: Context, exc: BaseException | None) -> tuple[grpc.StatusCode, str]:
    code = status_of_call(context, exc)
    if exc is None or isinstance(exc, grpc.aio.AbortError):
        details = context.details() or ""
        return code, details if isinstance(details, str) else ""
    return code, "call cancelled" if code is grpc.StatusCode.CANCELLED else type(exc).__name__


class StreamCounter:
    """Open streams per identity (a worker token's subject)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: Counter[str] = Counter()

    def acquire(self, identity: str) -> bool:
        if self.open[identity] >= self.limit:
            return False
        self.open[identity] += 1
        return True

    def release(self, identity: str) -> None:
        self.open[identity] -= 1
        if self.open[identity] <= 0:
            del self.open[identity]


@dataclass
class Call:
    """One intercepted call: the gate every wrapped handler goes through first."""

    interceptor: SecurityInterceptor
    method: str
    rule: Rule
    metadata: dict[str, str]

    @property
    def audited(self) -> bool:
        return audit.is_audited(self.method, UNAUDITED)

    def record(self, context: Context) -> audit.AuditRecord:
        rid = audit.request_id(self.metadata.get("x-request-id"))
        with contextlib.suppress(Exception):  # echoing the id is a courtesy, never a failure
            context.set_trailing_metadata((("x-request-id", rid),))
        level = self.interceptor.config.audit_level
        return audit.AuditRecord(method=self.method, peer=context.peer(), request_id=rid, level=level)

    def admit(self, context: Context, record: audit.AuditRecord) -> Access:
        """The caller's access to this method, or Refused."""
        config = self.interceptor.config
        if config.tls_enabled:  # a plaintext port has no certificate: its auth context is not worth building
            auth_context = context.auth_context()
            record.certificate = peer_certificate(auth_context)
            version = tls_version(auth_context)
            if version is not None and version != TLS13:
                raise Refused(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"TLS 1.3 is required; this connection negotiated {version.decode(errors='replace')}",
                )
        if self.rule.public or not config.auth_enabled or config.verifier is None:
            return Access(principal=None, scope=Scope.ALL, request_id=record.request_id)
        header = self.metadata.get("authorization")
        if not header:
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED, "missing credentials: send metadata 'authorization: Bearer <JWT>'"
            )
        try:
            token = bearer_token(header)
        except TokenError as exc:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None
        principal = self.authenticate(token)
        record.principal = principal
        return Access(principal=principal, scope=self.authorize(principal), request_id=record.request_id)

    def authenticate(self, token: str) -> Principal:
        """The token's principal, or Refused (UNAUTHENTICATED) saying why not."""
        verifier = self.interceptor.config.verifier
        if verifier is None:  # pragma: no cover - only called with authentication on
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "authentication is not configured")
        try:
            return verifier.verify(token)
        except TokenError as exc:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None

    def authorize(self, principal: Principal) -> Scope:
        """The widest scope the method's rule grants the principal, or Refused (PERMISSION_DENIED)."""
        scope = self.rule.scope_for(principal.roles)
        if scope is None:
            allowed = ", ".join(role.value for role in self.rule.allowed) or "no role"
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{_describe(principal)} may not call {_short(self.method)}; allowed: {allowed}",
            )
        return scope

    def renewal(self, principal: Principal, certificate: PeerCertificate | None) -> Renewal:
        """How a fresh token on this stream is checked: exactly as the opening one was."""

        def check(token: str, worker_id: str) -> Principal:
            try:
                principal = self.authenticate(token)
                fresh = Access(principal=principal, scope=self.authorize(principal))
            except Refused as refused:
                raise RefreshRefused(refused.message) from None
            problem = self.worker_problem(fresh, certificate, worker_id)
            if problem is not None:
                raise RefreshRefused(problem)
            return principal

        return Renewal(principal, check)

    def worker_problem(self, access: Access, certificate: PeerCertificate | None, worker_id: str) -> str | None:
        """Why this caller may not register as `worker_id`, or None."""
        principal = access.principal
        if principal is not None and principal.has(Role.SERVICE):
            return None  # a trusted worker pool acts for any worker id
        if principal is not None and worker_id != principal.subject:
            return f"worker_id {worker_id!r} does not match the token subject {principal.subject!r}"
        if certificate is not None and worker_id not in certificate.identities:
            names = ", ".join(sorted(certificate.identities)) or "none"
            return f"the client certificate does not name worker {worker_id!r} (it names: {names})"
        return None


@dataclass(frozen=True)
class Gate:
    """One method's gate, made once per method: each call through it is a `Call` with its own metadata."""

    interceptor: SecurityInterceptor
    method: str
    rule: Rule

    def call(self, context: Context) -> Call:
        return Call(self.interceptor, self.method, self.rule, _metadata(metadata_of(context)))


class SecurityInterceptor(HandlerInterceptor):
    def __init__(self, config: SecurityConfig) -> None:
        super().__init__()
        self.config = config
        self.streams = StreamCounter(config.max_streams_per_identity)

    def wrap(self, handler: Handler, details: grpc.HandlerCallDetails) -> Handler:
        gate = Gate(self, details.method, rule_for(details.method))
        return rewrap(handler, _WRAPPERS, gate, _tolerant(handler.request_deserializer))


def _metadata(items: Sequence[tuple[str, str | bytes]] | None) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in items or ():
        if key.endswith("-bin") or key in result:
            continue  # the first of repeated keys wins; binary metadata is never a credential
        result[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return result


async def _open(
    call: Call, context: Context, event: str, requests: AsyncIterator[Any] | None = None
) -> tuple[Access, audit.AuditRecord]:
    record = call.record(context)
    try:
        access = call.admit(context, record)
    except Refused as refused:
        if call.audited:
            record.write(event, refused.code, refused.message)
        if requests is not None:
            await await_first_message(requests)
        await context.abort(refused.code, refused.message)
        raise  # pragma: no cover - abort raises
    return access, record


async def _refuse_malformed(
    call: Call, context: Context, record: audit.AuditRecord, event: str, bad: Malformed
) -> None:
    message = refusal(_short(call.method), bad)
    if call.audited:
        record.write(event, grpc.StatusCode.INVALID_ARGUMENT, message)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)


class _Closing:
    """The end of a call, however it ended: frees its stream slot and writes its audit line."""

    __slots__ = ("call", "context", "event", "identity", "record")

    def __init__(
        self, call: Call, context: Context, record: audit.AuditRecord, event: str, identity: str | None = None
    ) -> None:
        self.call, self.context, self.record, self.event, self.identity = call, context, record, event, identity

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, failure: BaseException | None, traceback: object) -> None:
        if self.identity is not None:
            self.call.interceptor.streams.release(self.identity)
        if self.call.audited:
            self.record.write(self.event, *_outcome(self.context, failure))


def _unary(gate: Gate, inner: Any) -> Callable[[Any, Context], Awaitable[Any]]:
    async def handle(request: Any, context: Context) -> Any:
        call = gate.call(context)
        access, record = await _open(call, context, "call")
        if isinstance(request, Malformed):
            await _refuse_malformed(call, context, record, "call", request)
        record.add_jobs(audit.job_ids(request))
        token = current.set(access)
        failure: BaseException | None = None
        try:
            response = await inner(request, context)
            record.add_jobs(audit.job_ids(response))
            return response
        except BaseException as exc:
            failure = exc
            raise
        finally:
            current.reset(token)
            if call.audited:
                record.write("call", *_outcome(context, failure))

    return handle


def _unary_stream(gate: Gate, inner: Any) -> Callable[[Any, Context], AsyncIterator[Any]]:
    async def handle(request: Any, context: Context) -> AsyncIterator[Any]:
        call = gate.call(context)
        access, record = await _open(call, context, "stream.open")
        if isinstance(request, Malformed):
            await _refuse_malformed(call, context, record, "stream.open", request)
        if call.audited:
            record.write("stream.open", grpc.StatusCode.OK)
        current.set(access)
        with _Closing(call, context, record, "stream.close"):
            async for response in relay(inner(request, context)):
                yield response

    return handle


class _Requests:
    """The request stream as the handler sees it: malformed messages and foreign worker ids end it."""

    def __init__(self, call: Call, access: Access, record: audit.AuditRecord) -> None:
        self.call = call
        self.access = access
        self.record = record
        self.refusal: Refused | None = None

    async def iterate(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        first = True
        async for request in requests:
            if isinstance(request, Malformed):
                message = f"stream message is not valid for {_short(self.call.method)}: {request.problem}"
                self.refusal = Refused(grpc.StatusCode.INVALID_ARGUMENT, message)
                return
            if first and self.call.method == CONNECT and request.WhichOneof("payload") == "registration":
                worker_id = request.registration.worker_id
                self.record.worker_id = worker_id[:MAX_WORKER_ID_IN_LOG]
                problem = self.call.worker_problem(self.access, self.record.certificate, worker_id)
                if problem is not None:
                    self.refusal = Refused(grpc.StatusCode.PERMISSION_DENIED, problem)
                    return
            first = False
            yield request


def _stream_identity(call: Call, access: Access) -> str | None:
    if call.method != CONNECT or access.principal is None:
        return None
    return access.principal.subject


async def _admit_stream(
    call: Call, context: Context, requests: AsyncIterator[Any]
) -> tuple[Access, audit.AuditRecord, str | None]:
    access, record = await _open(call, context, "stream.open", requests)
    identity = _stream_identity(call, access)
    if identity is not None and not call.interceptor.streams.acquire(identity):
        limit = call.interceptor.streams.limit
        message = f"{identity!r} already has {limit} open worker streams (the limit); close one first"
        if call.audited:
            record.write("stream.open", grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        await await_first_message(requests)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
    if call.audited:
        record.write("stream.open", grpc.StatusCode.OK)
    return access, record, identity


def _stream_unary(gate: Gate, inner: Any) -> Callable[[Any, Context], Awaitable[Any]]:
    async def handle(requests: AsyncIterator[Any], context: Context) -> Any:
        call = gate.call(context)
        access, record, identity = await _admit_stream(call, context, requests)
        guard = _Requests(call, access, record)
        current.set(access)
        with _Closing(call, context, record, "stream.close", identity):
            response = await inner(guard.iterate(requests), context)
            if guard.refusal is not None:
                await context.abort(guard.refusal.code, guard.refusal.message)
            return response

    return handle


def _stream_stream(gate: Gate, inner: Any) -> Callable[[Any, Context], AsyncIterator[Any]]:
    async def handle(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        call = gate.call(context)
        access, record, identity = await _admit_stream(call, context, requests)
        guard = _Requests(call, access, record)
        # Set in this task's context; the handler's own tasks copy it when they are created.
        current.set(access)
        if call.method == CONNECT and access.principal is not None:
            renewal.current.set(call.renewal(access.principal, record.certificate))
        with _Closing(call, context, record, "stream.close", identity):
            async for response in relay(inner(guard.iterate(requests), context)):
                yield response
            if guard.refusal is not None:
                await context.abort(guard.refusal.code, guard.refusal.message)

    return handle


_WRAPPERS = Wrappers(_unary, _unary_stream, _stream_unary, _stream_stream)
