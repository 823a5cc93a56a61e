"""The torch-free policy runtime on hand-written policy files (numpy only, as the format documents them): loading,
acting, refusing bad files and bad observations, and never importing torch."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from op3_walk import PACKAGE_ROOT
from op3_walk.policy.runtime import (FORMAT, VERSION, NumpyPolicy, PolicyFileError, PolicyMismatchError,
                                     expected_interface)


def hand_made(interface, hidden=(8, 5), seed=0, normalization=None, **meta_overrides):
    """The entries of a policy file for ``interface``, written from the format description alone."""
    rng = np.random.default_rng(seed)
    sizes = [interface.obs_dim] + list(hidden) + [interface.action_size]
    discrete = interface.action_kind == "discrete"
    meta = {"algo": "dqn" if discrete else "td3", "robot": interface.robot, "task": interface.task, "env": "",
            "observation_names": interface.observation_names, "observation_sizes": interface.observation_sizes,
            "action_kind": interface.action_kind, "action_size": interface.action_size,
            "control_rate_hz": interface.control_rate_hz, "task_interface": interface.task_interface,
            "source_checkpoint": "/nowhere/checkpoint.pt", "env_steps": 1234}
    meta.update(meta_overrides)
    arrays = {"format": np.array(FORMAT), "version": np.array(VERSION), "meta": np.array(json.dumps(meta)),
              "activations": np.array(["relu"] * len(hidden) + ["identity" if discrete else "tanh"])}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        arrays["w%d" % i] = rng.normal(0.0, 1.0 / np.sqrt(a), (a, b)).astype(np.float32)
        arrays["b%d" % i] = rng.normal(0.0, 0.1, b).astype(np.float32)
    if normalization is not None:
        mean, std, clip = normalization
        arrays.update(obs_mean=np.asarray(mean, np.float32), obs_std=np.asarray(std, np.float32),
                      obs_clip=np.array(clip, np.float64))
    return arrays


def reference_forward(arrays, obs):
    """The documented maths in float64, independently of the runtime."""
    x = np.asarray(obs, np.float64)
    if "obs_mean" in arrays:
        x = np.clip((x - arrays["obs_mean"]) / arrays["obs_std"], -arrays["obs_clip"], arrays["obs_clip"])
    for i, act in enumerate(arrays["activations"]):
        x = x @ arrays["w%d" % i].astype(np.float64) + arrays["b%d" % i]
        x = np.maximum(x, 0.0) if act == "relu" else np.tanh(x) if act == "tanh" else x
    return x


@pytest.fixture(scope="module")
def plen_walk():
    return expected_interface("plen", "walk")


def save(tmp_path, arrays, name="policy.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def test_continuous_policy_acts_like_the_documented_maths(tmp_path, plen_walk):
    arrays = hand_made(plen_walk)
    policy = NumpyPolicy(save(tmp_path, arrays))
    assert policy.obs_dim == 62 and policy.action_size == 18 and not policy.discrete
    assert policy.layer_sizes == [62, 8, 5, 18] and policy.control_rate_hz == 50.0
    assert policy.observation_layout[0] == ("joint_positions", 18) and policy.env_steps == 1234
    rng = np.random.default_rng(1)
    for _ in range(20):
        obs = rng.normal(size=62).astype(np.float32)
        action = policy.act(obs)
        assert action.dtype == np.float32 and action.shape == (18,)
        assert np.all(np.abs(action) <= 1.0)
        np.testing.assert_allclose(action, reference_forward(arrays, obs), atol=1e-5)
    batch = rng.normal(size=(7, 62))
    np.testing.assert_allclose(policy.forward(batch), [reference_forward(arrays, o) for o in batch], atol=1e-5)
    obs = rng.normal(size=62).astype(np.float32)
    kept = obs.copy()
    policy.act(obs)
    assert np.array_equal(obs, kept), "act must not change its input"


def test_discrete_policy_returns_the_argmax_index(tmp_path):
    iface = expected_interface("plen", "zmp_tracking")
    arrays = hand_made(iface)
    policy = NumpyPolicy(save(tmp_path, arrays))
    assert policy.discrete and policy.action_size == 27
    rng = np.random.default_rng(2)
    picks = set()
    for _ in range(50):
        obs = rng.normal(size=policy.obs_dim)
        action = policy.act(obs)
        assert type(action) is int and action == int(np.argmax(reference_forward(arrays, obs)))
        picks.add(action)
    assert len(picks) > 1


def test_observation_normalisation_is_applied(tmp_path, plen_walk):
    rng = np.random.default_rng(3)
    mean, std = rng.normal(size=62), rng.uniform(0.5, 2.0, 62)
    arrays = hand_made(plen_walk, normalization=(mean, std, 2.0))
    policy = NumpyPolicy(save(tmp_path, arrays))
    assert policy.normalizes_observations
    for _ in range(10):
        obs = rng.normal(0.0, 5.0, 62)
        np.testing.assert_allclose(policy.act(obs), reference_forward(arrays, obs), atol=1e-5)


def test_bad_observations_are_refused(tmp_path, plen_walk):
    policy = NumpyPolicy(save(tmp_path, hand_made(plen_walk)))
    with pytest.raises(ValueError, match=r"shape \(61,\).*\(62,\)"):
        policy.act(np.zeros(61))
    obs = np.zeros(62)
    obs[5] = np.nan
    with pytest.raises(ValueError, match=r"non-finite values at indices \[5\]"):
        policy.act(obs)
    obs[5] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        policy.act(obs)
    with pytest.raises(ValueError, match="not a vector of numbers"):
        policy.act(["a"] * 62)


def corrupt_variants(arrays):
    """(name, entries or raw bytes, expected message) of files that must be refused."""
    def change(**kv):
        out = dict(arrays)
        for key, value in kv.items():
            if value is None:
                out.pop(key)
            else:
                out[key] = value
        return out

    meta = json.loads(str(arrays["meta"]))
    no_robot = {k: v for k, v in meta.items() if k != "robot"}
    nan_w = arrays["w1"].copy()
    nan_w[0, 0] = np.nan
    return [
        ("wrong format marker", change(format=np.array("something-else")), "not an op3_walk policy"),
        ("no format marker", change(format=None), "not an op3_walk policy"),
        ("newer version", change(version=np.array(VERSION + 1)), "newer than this code reads"),
        ("version 0", change(version=np.array(0)), "unsupported policy format version"),
        ("meta not JSON", change(meta=np.array("{broken")), "not valid JSON"),
        ("meta lacks robot", change(meta=np.array(json.dumps(no_robot))), "metadata lacks robot"),
        ("layer missing", change(w2=None), "w2 missing"),
        ("wrong layer shape", change(w1=np.zeros((7, 5), np.float32)), "layer 1 has weights"),
        ("non-finite weights", change(w1=nan_w), "non-finite weights"),
        ("unknown activation", change(activations=np.array(["relu", "gelu", "tanh"])), "unknown activation"),
        ("continuous without tanh", change(activations=np.array(["relu", "relu", "identity"])), "must end in tanh"),
        ("extra entry", change(extra=np.zeros(3)), "unexpected entries extra"),
        ("half the normalisation", change(obs_mean=np.zeros(62, np.float32)), "normalisation needs all"),
        ("object array (pickle)", change(w0=np.array([object()], dtype=object)), "cannot be read"),
    ]


@pytest.mark.parametrize("index", range(14))
def test_malformed_files_are_refused_with_a_clear_error(tmp_path, plen_walk, index):
    name, entries, message = corrupt_variants(hand_made(plen_walk))[index]
    path = tmp_path / "bad.npz"
    np.savez(path, **entries)
    with pytest.raises(PolicyFileError, match=message):
        NumpyPolicy(str(path))


def test_truncated_random_and_missing_files_are_refused(tmp_path, plen_walk):
    good = save(tmp_path, hand_made(plen_walk))
    data = open(good, "rb").read()
    for cut in (10, len(data) // 2, len(data) - 30):
        truncated = tmp_path / ("cut%d.npz" % cut)
        truncated.write_bytes(data[:cut])
        with pytest.raises(PolicyFileError, match="cut%d.npz" % cut):
            NumpyPolicy(str(truncated))
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF        # inside a member: the zip CRC (or the array) no longer checks out
    damaged = tmp_path / "flipped.npz"
    damaged.write_bytes(bytes(flipped))
    with pytest.raises(PolicyFileError):
        NumpyPolicy(str(damaged))
    noise = tmp_path / "noise.npz"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(PolicyFileError, match="cannot be read"):
        NumpyPolicy(str(noise))
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(PolicyFileError, match="single .npy array"):
        NumpyPolicy(str(single))
    with pytest.raises(PolicyFileError, match="does not exist"):
        NumpyPolicy(str(tmp_path / "missing.npz"))


def test_compatibility_with_robot_and_task(tmp_path, plen_walk, monkeypatch):
    policy = NumpyPolicy(save(tmp_path, hand_made(plen_walk)))
    policy.check_compatible("plen", "walk")
    policy.check_compatible("plen", "plen_shaping")      # another reward, same interface: fine
    with pytest.raises(PolicyMismatchError, match="trained for robot plen, not op3"):
        policy.check_compatible("op3", "walk")
    with pytest.raises(PolicyMismatchError, match="observation layout differs.*command:3"):
        policy.check_compatible("plen", "velocity_tracking")
    with pytest.raises(PolicyMismatchError, match="task action settings differ: mode policy 'joint_targets', "
                                                  "expected 'residual'"):
        policy.check_compatible("plen", "residual_walk")
    with pytest.raises(PolicyMismatchError, match="action differs: policy continuous 18, expected discrete 27"):
        policy.check_compatible("plen", "zmp_tracking")
    task = tmp_path / "slow_joints.yaml"
    task.write_text(open(os.path.join(PACKAGE_ROOT, "config", "tasks", "walk.yaml")).read()
                    .replace("joint_velocity_scale: 0.1", "joint_velocity_scale: 0.2"))
    with pytest.raises(PolicyMismatchError, match="observation settings differ: joint_velocity_scale"):
        policy.check_compatible("plen", str(task))
    policy.check_layout([n for n, _ in policy.observation_layout], [s for _, s in policy.observation_layout])
    with pytest.raises(PolicyMismatchError, match="the controller's state has layout"):
        policy.check_layout(["joint_positions"], [18], what="the controller's state")

    gym = NumpyPolicy(save(tmp_path, hand_made(plen_walk, robot="", task="", env="Pendulum-v1", task_interface=None),
                           "gym.npz"))
    with pytest.raises(PolicyMismatchError, match="gymnasium env 'Pendulum-v1'"):
        gym.check_compatible("plen", "walk")

    other_rate = NumpyPolicy(save(tmp_path, hand_made(plen_walk, control_rate_hz=60.0), "rate.npz"))
    with pytest.raises(PolicyMismatchError, match="control rate differs: policy 60 Hz, expected 50 Hz"):
        other_rate.check_compatible("plen", "walk")


def test_runtime_never_imports_torch(tmp_path, plen_walk):
    """What a robot's computer runs: import, load, act, check compatibility, all without torch."""
    path = save(tmp_path, hand_made(plen_walk))
    code = ("import sys, numpy as np; import op3_walk.policy as p; pol = p.NumpyPolicy(%r); "
            "pol.act(np.zeros(pol.obs_dim)); pol.check_compatible('plen', 'walk'); "
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')); "
            "print(bad); sys.exit(1 if bad else 0)" % path)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=os.path.join(PACKAGE_ROOT, "src")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_module_imports_only_numpy_and_the_standard_library():
    """Module-level imports of the runtime package: numpy, the standard library and itself; the task code it uses
    to check compatibility is imported inside that function."""
    import ast
    forbidden = {"torch", "rospy", "gymnasium", "pybullet", "yaml", "scipy"}
    for name in ("__init__.py", "runtime.py"):
        path = os.path.join(PACKAGE_ROOT, "src", "op3_walk", "policy", name)
        tree = ast.parse(open(path).read())
        for node in tree.body:
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for module in modules:
                assert module.split(".")[0] not in forbidden, "%s imports %s at module level" % (name, module)
                if module.startswith("op3_walk"):
                    assert module.startswith("op3_walk.policy.runtime"), "%s imports %s" % (name, module)
