"""The one rule for job types and capabilities, and for names that reach logs (dispatchd.common.names).

The control plane, the gateway, the SDK and dispatchctl each apply it; each is checked here
to refuse the same name with the same words, so none of them carries a copy of its own.
"""

from __future__ import annotations

import pytest

from dispatchd.cli.main import build_parser
from dispatchd.common import names
from dispatchd.control_plane import validation
from dispatchd.platform.errors import InvalidArgument
from dispatchd.sdk import Worker
from dispatchd.v1 import worker_service_pb2 as wpb
from dispatchd.worker_gateway.servicer import _validate

VALID = ["shell", "email", "email.send", "a.b-c.d_e", "x1", "9.z", "a" * names.MAX_JOB_TYPE_CHARS]
CONTROL = ["probe.never\n", "email\r", "a\tb", "a\x00", "\x1b[31mred", "a\x7f", "a\x85", "a\u2028b"]
INVALID = ["", "Email", "email.", ".email", "a..b", "a b", "-a", "a.-b", "a" * 129, "é", "a/b", "a*", *CONTROL]


@pytest.mark.parametrize("value", VALID)
def test_valid_job_types(value: str) -> None:
    assert names.job_type(value) == value


@pytest.mark.parametrize("value", INVALID)
def test_invalid_job_types(value: str) -> None:
    with pytest.raises(names.InvalidName) as caught:
        names.job_type(value, "job_type")
    message = str(caught.value)
    assert message.startswith("job_type ") and "is not a valid job type (at most 128 characters" in message
    assert not names.has_control_characters(message), "the value is quoted with its control characters escaped"


def test_the_trailing_newline_that_a_dollar_anchor_lets_through() -> None:
    # re.match(r"...$") accepts "probe.never\n": the bug this rule exists for.
    with pytest.raises(ValueError, match=r"'probe\.never\\n' is not a valid job type"):
        names.job_type("probe.never\n")


def test_long_values_are_cut_in_messages() -> None:
    with pytest.raises(names.InvalidName) as caught:
        names.job_type("x" * 10_000)
    assert len(str(caught.value)) < 400


@pytest.mark.parametrize("value", CONTROL)
def test_control_characters_in_names(value: str) -> None:
    with pytest.raises(names.InvalidName, match=r"metadata key .* must not contain control characters"):
        names.printable(value, "metadata key")


@pytest.mark.parametrize("value", ["tenant", "a b", "é-ü", "k=v", ""])
def test_printable_names(value: str) -> None:
    assert names.printable(value, "key") == value


@pytest.mark.parametrize("value", ["probe.never\n", "Email"])
def test_every_caller_applies_the_same_rule(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    words = "is not a valid job type"
    with pytest.raises(InvalidArgument, match=words):
        validation.job_type(value)
    problem = _validate(wpb.WorkerRegistration(worker_id="w", capabilities=["ok", value], max_concurrency=1))
    assert problem is not None and problem.startswith("registration.capabilities[1] ") and words in problem
    with pytest.raises(ValueError, match=words):
        Worker().register(value, lambda task: None)
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["submit", value])
    assert exited.value.code == 2 and words in capsys.readouterr().err


@pytest.mark.parametrize("command", [["list"], ["dead-letters"], ["redrive"]])
def test_the_cli_checks_type_filters_too(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args([*command, "--type", "email.send"]).type == "email.send"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--type", "email\n"])
    assert "'email\\n' is not a valid job type" in capsys.readouterr().err


def test_control_characters_in_worker_ids_are_refused() -> None:
    problem = _validate(wpb.WorkerRegistration(worker_id="w\n", capabilities=["ok"], max_concurrency=1))
    assert problem == "registration.worker_id 'w\\n' must not contain control characters"
