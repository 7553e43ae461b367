"""Workflow definitions without a database: validation (naming the step), templates, the YAML
loader, and the JSON Schema that editors use (the shipped examples must pass it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from dispatchd.control_plane.workflow_files import definition_files, load_file
from dispatchd.platform.errors import InvalidArgument
from dispatchd.platform.workflow_definitions import parse
from dispatchd.platform.workflow_templates import TemplateError, default_template, resolve

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "workflows"
SCHEMA = json.loads((ROOT / "schemas" / "workflow.schema.json").read_text())


def _doc(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"name": "t.flow", "steps": list(steps)}


def _echo(step_id: str, *depends_on: str, **more: Any) -> dict[str, Any]:
    return {"id": step_id, "job_type": "builtin.echo", "depends_on": list(depends_on), **more}


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((_echo("a"), _echo("a")), "step 'a': duplicate step id"),
        ((_echo("a", "nope"),), "step 'a': depends_on names unknown step 'nope'"),
        ((_echo("a", "a"),), "step 'a': is part of a dependency cycle"),
        ((_echo("a", "c"), _echo("b", "a"), _echo("c", "b")), "is part of a dependency cycle"),
        ((_echo("a", payload={"x": {"$ref": "steps.zz.result"}}),), "step 'a': payload reference 'steps.zz.result'"),
        # b is a sibling, not an ancestor: its result is not there when c is released.
        ((_echo("a"), _echo("b", "a"), _echo("c", "a", payload={"$ref": "steps.b.result"})), "step 'c'"),
        ((_echo("a", payload={"$ref": "env.HOME"}),), "step 'a': payload: "),
        ((_echo("a", payload={"$ref": "input", "x": 1}),), "is not a reference"),
        ((_echo("a", retry={"max_attempts": 101}),), "step 'a': retry_policy.max_attempts"),
        ((_echo("a", priority=5000),), "step 'a': priority must be between 0 and 1000"),
        ((_echo("a", colour="red"),), "step 'a': unknown field(s) colour"),
        (({"id": "A", "job_type": "x"},), "steps[0].id 'A'"),
        (({"id": "a", "job_type": "Bad Type"},), "step 'a': job_type 'Bad Type' is not a valid job type"),
    ],
)
def test_invalid_definitions_name_the_step(steps: tuple[dict[str, Any], ...], message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse(_doc(*steps))
    assert message in str(caught.value)


def test_a_valid_definition_fills_defaults_and_has_a_stable_digest() -> None:
    definition = parse(_doc(_echo("a"), _echo("b", "a"), _echo("c", "a", "b", continue_on_failure=True)))
    assert [s.id for s in definition.steps] == ["a", "b", "c"]
    assert definition.steps[2].payload == default_template(["a", "b"])
    assert parse(definition.canonical()).digest() == definition.digest()
    changed = parse(_doc(_echo("a"), _echo("b", "a", priority=1), _echo("c", "a", "b")))
    assert changed.digest() != definition.digest()


def test_templates_resolve_paths_and_refuse_what_is_missing() -> None:
    template = {"who": {"$ref": "input.user.name"}, "rows": [{"$ref": "steps.a.result.rows.1"}], "raw": "$ref"}
    results = {"a": {"rows": [10, 20]}}
    assert resolve(template, {"user": {"name": "ada"}}, results) == {"who": "ada", "rows": [20], "raw": "$ref"}
    with pytest.raises(TemplateError, match="'name' is not in the value"):
        resolve(template, {"user": {}}, results)
    with pytest.raises(TemplateError, match="step 'a' has no result"):
        resolve(template, {"user": {"name": "ada"}}, {})


def test_the_loader_reads_every_yaml_document_and_names_a_bad_file(tmp_path: Path) -> None:
    (tmp_path / "two.yaml").write_text(
        "name: t.one\nsteps: [{id: a, job_type: builtin.echo}]\n---\nname: t.two\nsteps: [{id: b, job_type: x.y}]\n"
    )
    (tmp_path / "cycle.yml").write_text("name: t.bad\nsteps: [{id: a, job_type: x, depends_on: [a]}]\n")
    (tmp_path / "notes.txt").write_text("not a definition")
    assert [p.name for p in definition_files(tmp_path)] == ["cycle.yml", "two.yaml"]
    assert [d.name for d in load_file(tmp_path / "two.yaml")] == ["t.one", "t.two"]
    with pytest.raises(InvalidArgument, match=r"cycle.yml: step 'a': is part of a dependency cycle"):
        load_file(tmp_path / "cycle.yml")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(InvalidArgument, match=r"broken\.yaml: cannot read it"):
        load_file(tmp_path / "broken.yaml")


def test_the_shipped_examples_pass_the_schema_and_the_server_validation() -> None:
    files = definition_files(EXAMPLES)
    assert {p.name for p in files} >= {"diamond.yaml", "etl.yaml"}
    for path in files:
        assert load_file(path)  # what the control plane accepts
        for document in yaml.safe_load_all(path.read_text()):  # what an editor checks, as written
            jsonschema.validate(document, SCHEMA)


def test_the_schema_refuses_what_editors_should_flag() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    for bad in (
        {"name": "t", "steps": []},
        {"name": "T", "steps": [{"id": "a", "job_type": "x"}]},
        {"name": "t", "steps": [{"id": "a", "job_type": "x", "retries": 3}]},
        {"name": "t", "steps": [{"id": "a"}]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)
