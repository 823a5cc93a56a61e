# op3_walk — the two commands that matter:
#   make demo   a short headless training session through ROS on PyBullet (outputs in out/demo)
#   make test   unit + hardware (real drivers, simulated chips) + integration tests (real roscore, real nodes)
# Both run `make setup` first, which installs what is missing and skips what is done.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# In-recipe environment: ROS + the built workspace + the venv.
WITH_ENV := source ./env.sh &&

DEMO_STEPS ?= 12000
DEMO_OUT ?= out/demo
PYTEST_ARGS ?=
# make test-portable: the simulation unit tests (pytest -m sim) under each of these OpenBLAS kernels the CPU can run,
# plus the fallbacks while fewer than two distinct kernels ran (tests/unit/blas_kernel.py chooses)
PORTABLE_KERNELS ?= Haswell SkylakeX
PORTABLE_FALLBACK ?= Prescott
# Benchmarks (tools/bench_agents.py; results go to docs/benchmarks.md, runs to out/bench)
BENCH_ALGOS ?= td3,ddpg,sac,dqn
BENCH_SEEDS ?= 0,1,2
BENCH_ARGS ?=
BIPEDAL_STEPS ?= 1000000
BIPEDAL_SEEDS ?= 0
BIPEDAL_ARGS ?= --no-sb3
# Soak (tools/soak.py; figures go to docs/benchmarks.md, samples to out/soak)
SOAK_MINUTES ?= 60
SOAK_SAMPLE_S ?= 60
SOAK_ARGS ?=
# Walking recipes (docs/results.md): make walk ROBOT=op3 SEED=0
ROBOT ?= plen
SEED ?= 0
WALK_OUT ?= out/walk
WALK_STEPS_plen := 60000
WALK_STEPS_op3 := 150000
WALK_DIR = $(WALK_OUT)/$(ROBOT)_s$(SEED)

.PHONY: help setup demo walk test test-portable test-unit test-hardware test-integration urdf clean distclean bench-setup bench-agents bench-bipedal bench-ros bench-hardware soak

help:
	@echo "make demo              short headless TD3 training through ROS on PyBullet (DEMO_STEPS=$(DEMO_STEPS), DEMO_OUT=$(DEMO_OUT))"
	@echo "make test              unit + hardware (simulated chips) + integration tests"
	@echo "make walk              the walking recipe of ROBOT=plen|op3 with SEED=0: train (PLEN $(WALK_STEPS_plen), OP3"
	@echo "                       $(WALK_STEPS_op3) env steps, ~12 / ~33 min; plus evaluation), export, evaluate; in WALK_OUT/ROBOT_sSEED"
	@echo "make test-unit         tests/unit only (no ROS master)"
	@echo "make test-portable     the simulation unit tests under two OpenBLAS kernels (PORTABLE_KERNELS=$(PORTABLE_KERNELS)"
	@echo "                       where the CPU runs them); make test runs it too"
	@echo "make test-hardware     tests/hardware only (real Adafruit drivers on the simulated I2C bus)"
	@echo "make test-integration  tests/integration only (starts its own roscore)"
	@echo "make setup             install ROS1 / venv / Python deps and build the catkin workspace (idempotent)"
	@echo "make urdf              regenerate urdf/*.urdf from config/robots/*.yaml"
	@echo "make bench-agents      ours vs Stable-Baselines3: TD3/DDPG/SAC on Pendulum-v1, DQN on CartPole-v1 (~30 min;"
	@echo "                       BENCH_ALGOS=$(BENCH_ALGOS) BENCH_SEEDS=$(BENCH_SEEDS)); writes docs/benchmarks.md"
	@echo "make bench-ros         ROS lockstep / in-process env steps/s, round-trip latency, 1/2/4 actors (~3 min;"
	@echo "                       BENCH_ROS_ARGS=...); writes docs/benchmarks.md"
	@echo "make bench-hardware    PLEN control loop at 50 Hz on the simulated I2C bus: tick period, jitter, I2C time vs"
	@echo "                       the config's estimate, 100 kHz and reads_per_tick rows (~2.5 min; torch-free;"
	@echo "                       BENCH_HARDWARE_ARGS=...); writes docs/benchmarks.md"
	@echo "make soak              $(SOAK_MINUTES) min of lockstep training + realtime deploy on PyBullet through ROS: RSS, open"
	@echo "                       fds, threads of every node each SOAK_SAMPLE_S=$(SOAK_SAMPLE_S) s; checks nothing is lost"
	@echo "                       (SOAK_MINUTES=, SOAK_ARGS=...); writes docs/benchmarks.md, docs/img/soak.png, out/soak"
	@echo "make bench-bipedal     TD3 on BipedalWalker-v3, BIPEDAL_STEPS=$(BIPEDAL_STEPS) (hours; ours only unless"
	@echo "                       BIPEDAL_ARGS= is given)"
	@echo "make clean             remove out/; make distclean also removes .venv, .ws and stamps"

setup:
	@bash tools/setup.sh

demo: setup
	@$(WITH_ENV) bash tools/demo.sh --steps $(DEMO_STEPS) --out $(DEMO_OUT)

walk: setup
	@test -n "$(WALK_STEPS_$(ROBOT))" || { echo "make walk: ROBOT must be plen or op3, got '$(ROBOT)'" >&2; exit 2; }
	@test ! -e "$(WALK_DIR)/checkpoint.pt" || { echo "make walk: $(WALK_DIR) already has a run (remove it, or resume" \
	  "with scripts/train --resume $(WALK_DIR)/checkpoint.pt --steps $(WALK_STEPS_$(ROBOT)))" >&2; exit 2; }
	$(WITH_ENV) scripts/train --robot $(ROBOT) --task $(ROBOT)_walk_fast --algo td3 \
	  --agent-config config/agents/td3_residual.yaml --steps $(WALK_STEPS_$(ROBOT)) --seed $(SEED) \
	  --out-dir $(WALK_DIR) --no-progress --checkpoint-every 10000
	$(WITH_ENV) scripts/export_policy $(WALK_DIR)/checkpoint.pt -o $(WALK_DIR)/policy.npz
	$(WITH_ENV) scripts/evaluate $(WALK_DIR)/policy.npz --compare-reference --json $(WALK_DIR)/evaluation.json \
	  > $(WALK_DIR)/evaluation.md
	@cat $(WALK_DIR)/evaluation.md

test: setup
	@$(WITH_ENV) python -m pytest tests/unit tests/hardware tests/integration $(PYTEST_ARGS)
	@$(RUN_TEST_PORTABLE)

# Simulated trajectories differ in the last bits between BLAS kernels (README "Determinism"): the sim tests must hold
# under each kernel, not only this machine's.  Exit status 5 (no test selected, e.g. by a PYTEST_ARGS -k) is fine.
RUN_TEST_PORTABLE = $(WITH_ENV) plan="$$(python tests/unit/blas_kernel.py --choose $(PORTABLE_KERNELS) \
	  --fallback $(PORTABLE_FALLBACK))"; \
	if [ -z "$$plan" ]; then echo "[test-portable] SKIPPED: no OpenBLAS kernel to choose here (see above)"; exit 0; fi; \
	echo "[test-portable] numpy's OpenBLAS kernels to run the sim tests under: $$plan (OPENBLAS_CORETYPE:kernel)"; \
	for entry in $$plan; do \
	  echo "[test-portable] pytest -m sim with OPENBLAS_CORETYPE=$${entry%%:*} (kernel $${entry\#*:})"; rc=0; \
	  OPENBLAS_CORETYPE=$${entry%%:*} OP3_WALK_BLAS_KERNEL=$${entry\#*:} python -m pytest tests/unit -m sim -q \
	    $(PYTEST_ARGS) || rc=$$?; \
	  [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || exit $$rc; \
	done; \
	[ "$${plan\#* }" != "$$plan" ] || echo "[test-portable] only one kernel ran: nothing compared on this machine"

test-portable: setup
	@$(RUN_TEST_PORTABLE)

test-unit: setup
	@$(WITH_ENV) python -m pytest tests/unit $(PYTEST_ARGS)

test-hardware: setup
	@$(WITH_ENV) python -m pytest tests/hardware $(PYTEST_ARGS)

test-integration: setup
	@$(WITH_ENV) python -m pytest tests/integration $(PYTEST_ARGS)

urdf: setup
	@$(WITH_ENV) python -m op3_walk.robots.plen_urdf && python -m op3_walk.robots.op3_urdf

# Stable-Baselines3 for the benchmarks only, into the same .venv (re-run only when the requirement files change).
bench-setup: setup
	@h="$$(cat requirements.txt requirements-bench.txt | sha256sum | cut -d' ' -f1)"; \
	if [ "$$(cat .stamps/bench-requirements 2>/dev/null)" != "$$h" ]; then \
	  echo "[bench] pip: installing requirements-bench.txt into .venv (stable-baselines3)"; \
	  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-bench.txt 2>&1 \
	    | { grep -v "^WARNING: Location .* is ignored" || true; }; \
	  echo "$$h" > .stamps/bench-requirements; \
	else echo "[bench] pip: bench requirements up to date"; fi

bench-agents: bench-setup
	@$(WITH_ENV) python tools/bench_agents.py --algos $(BENCH_ALGOS) --seeds $(BENCH_SEEDS) $(BENCH_ARGS)

bench-ros: setup
	@$(WITH_ENV) python tools/bench_ros.py $(BENCH_ROS_ARGS)

bench-hardware: setup
	@$(WITH_ENV) python tools/bench_hardware.py $(BENCH_HARDWARE_ARGS)

soak: setup
	@$(WITH_ENV) python tools/soak.py --minutes $(SOAK_MINUTES) --sample-s $(SOAK_SAMPLE_S) $(SOAK_ARGS)

bench-bipedal: bench-setup
	@$(WITH_ENV) python tools/bench_agents.py --bipedal --steps $(BIPEDAL_STEPS) --seeds $(BIPEDAL_SEEDS) $(BIPEDAL_ARGS)

clean:
	rm -rf out .pytest_cache

distclean: clean
	rm -rf .venv .ws .stamps
