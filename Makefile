# PowerSense — every target that needs Python creates or updates .venv itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DBT_VENV  := .venv-dbt
DBT_STAMP := $(DBT_VENV)/.installed
APT_TOOLS := prometheus prometheus-alertmanager prometheus-pushgateway docker-compose wrk shellcheck kubectl
ARGS ?=

.PHONY: venv demo test bench evaluate evaluate-anomalies validate dashboards dbt-build lint tools dbt-venv lock clean

$(STAMP): requirements/base.txt requirements/ml.txt requirements/dev.txt requirements/constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/dev.txt -c requirements/constraints.txt
	@touch $(STAMP)

venv: $(STAMP)

# System tools the tests and benchmarks drive for real (promtool, amtool, docker-compose config, wrk).
tools:
	@missing=""; for b in promtool amtool prometheus-pushgateway docker-compose wrk shellcheck kubectl; do command -v $$b >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_TOOLS) >/dev/null; \
	  else echo "missing system tools; run as root: apt-get install -y $(APT_TOOLS)"; fi; fi

$(DBT_STAMP): dbt/requirements.txt
	@test -x $(DBT_VENV)/bin/python || $(PYTHON) -m venv $(DBT_VENV)
	$(DBT_VENV)/bin/pip install -q --disable-pip-version-check -r dbt/requirements.txt
	@touch $(DBT_STAMP)

dbt-venv: $(DBT_STAMP)

demo: venv
	$(PY) -m local_dev demo $(ARGS)

test: venv tools dbt-venv
	$(PY) -m pytest $(ARGS)

bench: venv tools
	$(PY) -m bench $(ARGS)

evaluate: venv
	$(PY) -m shared evaluate --out reports $(ARGS)

evaluate-anomalies: venv
	$(PY) -m shared evaluate-anomalies --out reports $(ARGS)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m mypy shared local_dev bench
	@# each handler.py is a top-level module named `handler`: check them one by one
	@for f in functions/*/handler.py; do $(PY) -m mypy $$f || exit 1; done

lock: venv
	$(PY) -m pip freeze --exclude-editable | sed 's/+cpu$$//' > requirements/constraints.txt

# Every config the test suite validates, as one command (promtool, amtool, compose, hadolint, cfn-lint, dbt).
validate: venv tools dbt-venv
	promtool check config observability/prometheus/prometheus.yml
	promtool check config observability/prometheus/prometheus.compose.yml
	promtool test rules observability/prometheus/tests/*.yml
	amtool check-config observability/alertmanager/alertmanager.yml
	docker-compose --env-file deploy/env.example -f docker-compose.yml config -q
	$(VENV)/bin/hadolint deploy/compose/scheduler.Dockerfile
	shellcheck deploy/faasd/install.sh deploy/faasd/services-watchdog.sh deploy/compose/init.sh deploy/kubernetes/secrets.sh deploy/seaweedfs/grpc-cert.sh
	$(VENV)/bin/hadolint template/powersense-python/Dockerfile functions/Dockerfile.lambda
	$(VENV)/bin/cfn-lint template.yaml
	$(PY) -m pytest -q -p no:cacheprovider tests/test_topology_kubernetes.py tests/test_schema_cluster.py  # kubernetes-validate, operator CRD schemas, chDB parse of the cluster DDL
	cd dbt && ../$(DBT_VENV)/bin/dbt compile --profiles-dir . --no-populate-cache

dashboards: venv
	$(PY) observability/grafana/build_dashboards.py

dbt-build: dbt-venv  # needs the ClickHouse server: POWERSENSE_DBT_HOST/PORT/USER/PASSWORD
	cd dbt && ../$(DBT_VENV)/bin/dbt build --profiles-dir . && ../$(DBT_VENV)/bin/dbt source freshness --profiles-dir .

clean:
	rm -rf var reports/*.json reports/*.png
