# op3_walk — the two commands that matter:
#   make demo   a short headless training session through ROS on PyBullet (outputs in out/demo)
#   make test   unit + integration tests (real roscore, real nodes)
# Both run `make setup` first, which installs what is missing and skips what is done.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# In-recipe environment: ROS + the built workspace + the venv.
WITH_ENV := source ./env.sh &&

DEMO_STEPS ?= 12000
DEMO_OUT ?= out/demo
PYTEST_ARGS ?=

.PHONY: help setup demo test test-unit test-integration urdf clean distclean

help:
	@echo "make demo              short headless TD3 training through ROS on PyBullet (DEMO_STEPS=$(DEMO_STEPS), DEMO_OUT=$(DEMO_OUT))"
	@echo "make test              unit + integration tests"
	@echo "make test-unit         tests/unit only (no ROS master)"
	@echo "make test-integration  tests/integration only (starts its own roscore)"
	@echo "make setup             install ROS1 / venv / Python deps and build the catkin workspace (idempotent)"
	@echo "make urdf              regenerate urdf/*.urdf from config/robots/*.yaml"
	@echo "make clean             remove out/; make distclean also removes .venv, .ws and stamps"

setup:
	@bash tools/setup.sh

demo: setup
	@$(WITH_ENV) bash tools/demo.sh --steps $(DEMO_STEPS) --out $(DEMO_OUT)

test: setup
	@$(WITH_ENV) python -m pytest tests/unit tests/integration $(PYTEST_ARGS)

test-unit: setup
	@$(WITH_ENV) python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: setup
	@$(WITH_ENV) python -m pytest tests/integration $(PYTEST_ARGS)

urdf: setup
	@$(WITH_ENV) python -m op3_walk.robots.plen_urdf && python -m op3_walk.robots.op3_urdf

clean:
	rm -rf out .pytest_cache

distclean: clean
	rm -rf .venv .ws .stamps
