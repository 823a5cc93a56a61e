"""evaluate: metrics on a scripted backend, gates that really change the physics, the reference gait walking, the
same numbers twice, exported policies evaluated without torch, and policies of another robot refused."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from op3_walk import PACKAGE_ROOT
from op3_walk.backends.base import Backend, RobotState
from op3_walk.backends.pybullet_backend import GROUND_FRICTION, PyBulletBackend
from op3_walk.policy.runtime import FORMAT, VERSION, expected_interface
from op3_walk.robots.description import load_robot
from op3_walk.training import evaluate as ev

pytestmark = pytest.mark.sim  # runs PyBullet: `make test-portable` runs it under two OpenBLAS kernels


class ScriptedBackend(Backend):
    """No physics: the torso moves at a constant velocity and yaw rate, every joint has a constant effort and
    velocity; records dynamics settings, pushes and applied targets (with the step they were applied before)."""

    def __init__(self, robot, vx=0.1, vy=-0.02, yaw_rate=0.05, effort=0.5, qdot=2.0, fall_after=None):
        self.robot = robot
        self.vx, self.vy, self.yaw_rate, self.effort, self.qdot = vx, vy, yaw_rate, effort, qdot
        self.fall_after = fall_after
        self.dynamics, self.pushes, self.applied = [], [], []
        self.steps, self.start = 0, np.zeros(3)

    link_names = property(lambda self: ("torso", "a", "b"))

    def set_dynamics(self, ground_friction=None, mass_scales=None, kp_scales=None):
        self.dynamics.append((ground_friction, None if mass_scales is None else list(mass_scales), kp_scales))

    def push(self, force, duration_s):
        self.pushes.append((self.steps, tuple(force), duration_s))

    def _state(self):
        n, t = self.robot.n_joints, self.steps * self.robot.control_period_s
        z = self.start[2] if self.fall_after is None or self.steps < self.fall_after else 0.0
        half = self.yaw_rate * t / 2.0
        return RobotState(time=t, joint_positions=self.robot.stance.copy(), joint_velocities=np.full(n, self.qdot),
                          joint_efforts=np.where(np.arange(n) % 2, -self.effort, self.effort),
                          base_position=self.start + np.array([self.vx * t, self.vy * t, z - self.start[2]]),
                          base_orientation=np.array([0.0, 0.0, math.sin(half), math.cos(half)]),
                          base_linear_velocity=np.array([self.vx, self.vy, 0.0]), base_angular_velocity=np.zeros(3),
                          linear_acceleration=np.array([0.0, 0.0, 9.81]), foot_contacts=np.ones(2, dtype=bool))

    def reset(self, joint_positions, base_position, base_orientation=(0.0, 0.0, 0.0, 1.0)):
        self.steps, self.start = 0, np.array(base_position, dtype=float) + np.array([0.3, 0.2, 0.0])
        return self._state()

    def apply(self, joint_targets):
        self.applied.append((self.steps, np.array(joint_targets, dtype=float)))

    def step(self):
        self.steps += 1
        return self._state()

    def close(self):
        pass


def counting_actor(n):
    """A deterministic policy whose action changes every step (ignores the observation)."""
    count = [0]

    def act(obs):
        count[0] += 1
        return np.full(n, math.sin(0.3 * count[0]), dtype=np.float32)
    return act


@pytest.fixture(scope="module")
def plen():
    return load_robot("plen")


def scripted_run(plen, gate, steps=50, backend=None, push=ev.PushSpec(time_s=0.2), **kwargs):
    backend = backend or ScriptedBackend(plen, **kwargs)
    env = ev.make_env("plen", "walk", steps, backend)
    result = ev.run_episode(env, counting_actor(plen.n_joints), ev.GATES[gate], 3, steps, push,
                            nominal_friction=GROUND_FRICTION, mass=2.0)
    return result, backend


def test_metrics_on_a_scripted_robot(plen):
    dt = plen.control_period_s
    result, _ = scripted_run(plen, "nominal", steps=50)
    seconds = 50 * dt
    assert result.steps == 50 and not result.fell and result.fell_at is None
    assert result.seconds == pytest.approx(seconds)
    assert result.distance == pytest.approx(0.1 * seconds) and result.speed == pytest.approx(0.1)
    assert result.lateral_drift == pytest.approx(0.02 * seconds) and result.lateral_displacement < 0.0
    assert result.heading_change == pytest.approx(0.05 * seconds)
    energy = seconds * plen.n_joints * 0.5 * 2.0
    assert result.energy == pytest.approx(energy)
    assert result.cost_of_transport == pytest.approx(energy / (2.0 * 9.81 * 0.1 * seconds))

    fell, _ = scripted_run(plen, "nominal", steps=50, fall_after=20)      # the torso drops at step 20
    assert fell.fell and fell.steps == 20 and fell.fell_at == pytest.approx(20 * dt)
    assert fell.distance == pytest.approx(0.1 * 20 * dt) and fell.speed == pytest.approx(0.1)

    backwards, _ = scripted_run(plen, "nominal", steps=10, vx=-0.1)
    assert backwards.speed == pytest.approx(-0.1) and backwards.cost_of_transport is None

    summary = ev.summarize([1.0, 3.0, None])
    assert summary == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "n": 2}


def test_gates_reach_the_backend(plen):
    _, nominal = scripted_run(plen, "nominal", steps=20)
    assert nominal.dynamics == [(None, None, None)] and nominal.pushes == []       # nominal restores the defaults
    _, low = scripted_run(plen, "friction_low", steps=5)
    assert low.dynamics == [(pytest.approx(0.8 * GROUND_FRICTION), [1.0] * 3, None)]
    _, high = scripted_run(plen, "friction_high", steps=5)
    assert high.dynamics[0][0] == pytest.approx(1.2 * GROUND_FRICTION)
    _, heavy = scripted_run(plen, "mass_high", steps=5)
    assert heavy.dynamics == [(pytest.approx(GROUND_FRICTION), [1.2] * 3, None)]
    _, light = scripted_run(plen, "mass_low", steps=5)
    assert light.dynamics[0][1] == [0.8] * 3

    # latency: each step's targets reach the backend one control period later; the first period holds the reset pose
    _, late = scripted_run(plen, "latency", steps=20)
    assert [k for k, _ in nominal.applied] == list(range(20))
    assert [k for k, _ in late.applied] == list(range(1, 20))
    for (_, delayed), (_, on_time) in zip(late.applied, nominal.applied[:-1]):
        np.testing.assert_array_equal(delayed, on_time)

    # push: at the first control period at/after push_time, with the configured force, direction and duration
    _, pushed = scripted_run(plen, "push", steps=20, push=ev.PushSpec(force=15.0, time_s=0.2, duration_s=0.1))
    assert pushed.pushes == [(int(round(0.2 / plen.control_period_s)), (0.0, 15.0, 0.0), 0.1)]
    _, backward = scripted_run(plen, "push_backward", steps=20)
    assert backward.pushes[0][1] == (-15.0, 0.0, 0.0)


def test_gates_change_the_pybullet_physics(plen):
    """Friction and mass reach PyBullet's model; the lateral push moves the walking torso sideways.  On three
    seeded episodes each (a property of the physics, not of one trajectory; measured over seeds 0-9 on two
    OpenBLAS kernels: energy x1.20-1.40 when heavy, nominal drift <= 0.0083 m, push +0.149-0.156 m sideways)."""
    reference = ev.reference_source("plen")
    with PyBulletBackend(plen) as backend:
        env = ev.make_env("plen", ev.REFERENCE_TASK, 60, backend)
        client = backend._client
        total_mass = lambda: sum(client.getDynamicsInfo(backend._body, i)[0]  # noqa: E731
                                 for i in range(-1, client.getNumJoints(backend._body)))
        ground_friction = lambda: client.getDynamicsInfo(backend._ground, -1)[1]  # noqa: E731
        push = ev.PushSpec(force=15.0, time_s=0.5, duration_s=0.1)
        for seed in range(3):
            runs = {}
            for gate in ("mass_high", "friction_low", "nominal", "push"):
                runs[gate] = ev.run_episode(env, reference.act, ev.GATES[gate], seed, 60, push, GROUND_FRICTION,
                                            0.496)
                if gate == "mass_high":
                    assert total_mass() == pytest.approx(1.2 * ev.urdf_mass(plen.urdf_path))
                    assert ground_friction() == pytest.approx(GROUND_FRICTION)
                if gate == "friction_low":
                    assert ground_friction() == pytest.approx(0.8 * GROUND_FRICTION)
                    assert total_mass() == pytest.approx(ev.urdf_mass(plen.urdf_path))
            assert runs["mass_high"].energy > 1.05 * runs["nominal"].energy, (seed, runs)
            assert runs["nominal"].lateral_drift < 0.02 and not runs["nominal"].fell, (seed, runs)
            assert runs["push"].lateral_displacement > runs["nominal"].lateral_displacement + 0.03, (seed, runs)


def test_reference_gait_walks_plen_forward():
    source = ev.reference_source("plen")
    assert source.kind == "reference" and source.task == "residual_walk"
    result = ev.evaluate(source, gates=["nominal"], episodes=2, seconds=3.0)
    summary = result.summary("nominal")
    assert summary["falls"]["count"] == 0
    assert summary["speed"]["min"] > 0.03 and summary["distance"]["min"] > 0.09
    assert result.seeds == [0, 1] and result.steps == 150
    assert any("zero actions" in note and "checked" in note for note in result.notes)
    with pytest.raises(ev.EvaluateError, match="residual"):
        ev.reference_source("plen", "walk")


def hand_made_policy(path, robot="plen", task="walk", hidden=8, seed=0):
    """An exported policy file written from the documented format (no torch)."""
    iface = expected_interface(robot, task)
    rng = np.random.default_rng(seed)
    meta = {"algo": "td3", "robot": iface.robot, "task": task, "env": "",
            "observation_names": iface.observation_names, "observation_sizes": iface.observation_sizes,
            "action_kind": iface.action_kind, "action_size": iface.action_size,
            "control_rate_hz": iface.control_rate_hz, "task_interface": iface.task_interface,
            "source_checkpoint": "/nowhere/checkpoint.pt", "env_steps": 1}
    sizes = [iface.obs_dim, hidden, iface.action_size]
    arrays = {"format": np.array(FORMAT), "version": np.array(VERSION), "meta": np.array(json.dumps(meta)),
              "activations": np.array(["relu", "tanh"])}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        arrays["w%d" % i] = (0.1 * rng.normal(size=(a, b))).astype(np.float32)
        arrays["b%d" % i] = np.zeros(b, np.float32)
    np.savez(str(path), **arrays)
    return str(path)


def test_same_command_same_numbers(tmp_path, capsys):
    policy = hand_made_policy(tmp_path / "p.npz")
    outputs = []
    for name in ("a.json", "b.json"):
        argv = [policy, "--compare-reference", "--episodes", "2", "--seconds", "1.0", "--gates", "nominal,push",
                "--push-time", "0.4", "--json", str(tmp_path / name), "--quiet"]
        assert ev.main(argv) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    first, second = (json.load(open(str(tmp_path / n))) for n in ("a.json", "b.json"))
    assert first == second
    assert first["policy"]["robot"] == "plen" and first["policy"]["task"] == "walk"
    assert first["reference"]["task"] == "residual_walk" and set(first["speed_ratio"]) == {"nominal", "push"}
    assert first["policy"]["seeds"] == [0, 1] and len(first["policy"]["gates"]["push"]["episodes"]) == 2
    assert "| nominal |" in outputs[0] and "policy / reference" in outputs[0]


def test_exported_policy_is_evaluated_without_torch(tmp_path):
    policy = hand_made_policy(tmp_path / "p.npz")
    out = str(tmp_path / "r.json")
    code = ("import sys; from op3_walk.training.evaluate import main; "
            "rc = main([%r, '--episodes', '1', '--seconds', '0.4', '--gates', 'nominal,latency', '--json', %r, "
            "'--quiet']); bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')); "
            "print(bad); sys.exit(rc or (3 if bad else 0))" % (policy, out))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=os.path.join(PACKAGE_ROOT, "src")))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.load(open(out))
    assert report["policy"]["kind"] == "npz" and report["policy"]["gates"]["latency"]["episodes"][0]["steps"] >= 1


def test_policy_for_another_robot_or_task_is_refused(tmp_path, capsys):
    policy = hand_made_policy(tmp_path / "p.npz")
    with pytest.raises(ev.EvaluateError, match="trained for robot plen, not op3"):
        ev.load_source(policy, robot="op3")
    with pytest.raises(ev.EvaluateError, match="does not fit"):
        ev.load_source(policy, task="residual_walk")
    assert ev.main([policy, "--robot", "op3", "--episodes", "1"]) == 2
    assert "evaluate: error:" in capsys.readouterr().err
    with pytest.raises(ev.EvaluateError, match="unknown gate"):
        ev.parse_gates("nominal,wind")
    assert ev.parse_gates("all,push_backward") == list(ev.DEFAULT_GATES) + ["push_backward"]


def test_checkpoint_source_acts_deterministically(tmp_path):
    from op3_walk.agents import AGENTS
    from op3_walk.training.checkpoint import save_checkpoint
    iface = expected_interface("plen", "walk")
    agent_cls, config_cls = AGENTS["td3"]
    agent = agent_cls(iface.obs_dim, iface.action_size, config_cls(hidden_sizes=[8], batch_size=4, buffer_size=8),
                      seed=3)
    path = save_checkpoint(str(tmp_path / "checkpoint.pt"), {"agent": agent.state_dict()},
                           {"algo": "td3", "obs_dim": iface.obs_dim, "act_dim": iface.action_size, "env_steps": 0,
                            "episodes": 0, "robot": "plen", "task": "walk"})
    source = ev.load_source(path)
    assert source.kind == "checkpoint" and source.robot == "plen" and source.task == "walk"
    obs = np.linspace(-1.0, 1.0, iface.obs_dim).astype(np.float32)
    np.testing.assert_array_equal(source.act(obs), agent.act(obs, explore=False))
    runs = [ev.evaluate(source, gates=["nominal"], episodes=1, seconds=0.3).to_dict() for _ in range(2)]
    assert runs[0] == runs[1]
    with pytest.raises(ev.EvaluateError, match="trained for robot plen, not op3"):
        ev.load_source(path, robot="op3")
