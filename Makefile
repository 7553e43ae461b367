# dispatchd developer entry points. `make up` runs the platform here; `make test` proves it.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv up check-up test lint typecheck unit integration e2e contract security chaos drills drill-backup drill-failover drill-region drill-schedule proto proto-baseline perf-smoke perf perf-compare perf-tracing-cost perf-floor perf-statements perf-workflow image image-test screenshots lock clean

venv: $(VENV)/.stamp

$(VENV)/.stamp: pyproject.toml libs/client/pyproject.toml requirements.lock scripts/bootstrap.sh
	bash scripts/bootstrap.sh

## Bring the whole platform up in the foreground (Ctrl-C stops it).
up: venv
	$(PY) -m dispatchd.devtools.up

## Start everything, run one job through it, stop (what CI uses to prove `make up`).
check-up: venv
	$(PY) -m dispatchd.devtools.up --check --data-dir .dispatchd/check

## Lint, type-check, then every test except chaos.
test: venv lint typecheck
	$(PY) -m pytest -m "not chaos" --durations=25 $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy libs services scripts perf

unit: venv
	$(PY) -m pytest tests/unit tests/contract $(PYTEST_ARGS)

integration: venv
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

e2e: venv
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

contract: venv
	$(PY) -m pytest tests/contract $(PYTEST_ARGS)

## Auth, mTLS, worker identity, audit, guardrail and the property-based test (also part of `make test`).
security: venv
	$(PY) -m pytest tests/security tests/unit/test_security_roles.py tests/unit/test_security_tokens.py \
		tests/unit/test_security_interceptor.py $(PYTEST_ARGS)

## Chaos test, profile CHAOS_PROFILE (long: ~10k jobs; short also runs in `make test`);
## writes evidence/drills/chaos-<profile>.json.
CHAOS_PROFILE ?= long
chaos: venv
	CHAOS_PROFILE=$(CHAOS_PROFILE) $(PY) -m pytest -m chaos $(PYTEST_ARGS)

## Every drill below (see README "Drills and recovery").
drills: drill-backup drill-failover

## Back up the live database under load, restore it, run on it; writes evidence/drills/backup-restore-validation.json.
drill-backup: venv
	$(PY) -m perf.drill_backup

## Scheduler takeover, worker requeue and gateway failover after SIGKILL; writes evidence/drills/failover.json.
drill-failover: venv
	$(PY) -m perf.drills

## A schedule firing every second for a minute across a scheduler leader SIGKILL; writes evidence/drills/schedule-failover.json.
drill-schedule: venv
	$(PY) -m perf.schedule_drill

## Regenerate gen/python from proto/ (commit the result; tests fail on drift).
proto: venv
	rm -f gen/python/dispatchd/v1/*_pb2*.py gen/python/dispatchd/v1/*_pb2*.pyi
	$(BIN)/buf lint
	$(BIN)/buf generate

## Accept the current contract as the new compatibility baseline (after a release).
proto-baseline: venv
	$(BIN)/buf build --exclude-source-info -o proto/baseline.json

## Performance harness (README "Performance"): locust, worker streams, end-to-end; ~2 min.
## Writes evidence/perf/smoke.json; `make perf PROFILE=average|stress` writes evidence/perf/$(PROFILE).json.
PROFILE ?= average
perf-smoke: venv
	$(PY) -m perf.smoke --profile smoke $(PERF_ARGS)

perf: venv
	$(PY) -m perf.smoke --profile $(PROFILE) $(PERF_ARGS)

## The same end-to-end workload through Celery 5 (own venv, .perf/celery-venv) and dispatchd, in one run;
## writes evidence/perf/compare.json.
perf-compare: venv
	$(PY) -m perf.compare $(PERF_ARGS)

## Saturation with tracing off and on (default sampling, OTLP to a counting sink), alternating;
## writes evidence/perf/tracing-cost.json and fails when the throughput drop exceeds 5%.
perf-tracing-cost: venv
	$(PY) -m perf.tracing_cost $(PERF_ARGS)

## What one job's building blocks cost here alone (bare grpc.aio SubmitJob, Postgres round trips,
## a Redis pipeline), beside dispatchd's figures; writes evidence/perf/floor.json.
perf-floor: venv
	$(PY) -m perf.floor $(PERF_ARGS)

## Saturation on a Postgres with pg_stat_statements: each statement's calls, rows and time per call
## and per job, beside the phase's throughput and CPU; writes evidence/perf/statements.json.
perf-statements: venv
	$(PY) -m perf.statements $(PERF_ARGS)

## Step-to-step latency of a 10-step workflow sequence (p50/p99 per hop; target p50 <= 5 ms);
## writes evidence/perf/workflow-hops.json.
perf-workflow: venv
	$(PY) -m perf.workflow_hops $(PERF_ARGS)

## Build the Dockerfile, unchanged, with buildah (vfs, chroot) on a Debian stand-in for the python
## base (scripts/base-image.sh, built once and cached); README "Image".
BUILDAH ?= buildah --storage-driver vfs
IMAGE ?= localhost/dispatchd:local
image:
	BUILDAH="$(BUILDAH)" IMAGE="$(IMAGE)" bash scripts/image-build.sh

## Build, then run migrate, the services and a worker from the image against private stores, one job
## end to end, size and user checked; writes evidence/image/image-test.json.
image-test: venv
	BUILDAH="$(BUILDAH)" IMAGE="$(IMAGE)" $(PY) -m dispatchd.devtools.image.smoke

## The dashboard's main pages as PNGs in docs/screenshots/ (its own stack with demo jobs; README "Web dashboard").
screenshots: venv
	$(PY) -m dispatchd.devtools.screenshots

## Re-pin every dependency of both distributions (run after changing either pyproject.toml's dependencies).
lock:
	rm -rf .lockvenv && python3 -m venv .lockvenv && .lockvenv/bin/pip install -q -e ./libs/client -e '.[dev]'
	.lockvenv/bin/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) .dispatchd .mypy_cache .ruff_cache

## Region failover to a live streaming replica and back (async RPO, sync RPO 0 and its cost);
## writes evidence/drills/region-failover.json.
drill-region: venv
	$(PY) -m perf.region_drill
