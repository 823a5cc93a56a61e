"""``train``: in-process training without ROS (same session, loop and outputs as learner_node).

Trains on the walking env (``--robot``/``--task``) or on any gymnasium env (``--env Pendulum-v1``,
``--env CartPole-v1`` for DQN, ``--env BipedalWalker-v3``).  SIGINT (Ctrl-C) or SIGTERM ends the run cleanly after
the current env step, with a final checkpoint; a second signal interrupts at once (the final checkpoint is still
attempted).  Exit status: 0 when the step budget is done, 128 + the signal number after a stop by signal, 2 for a
usage or config error.

Offline data: ``--prefill FILE`` pushes recorded transitions (``replay_bag buffer BAG --out FILE``) into the agent's
replay memory before training (after ``--resume``, so a resumed agent is fine-tuned on them), and
``--offline-updates N`` then takes N gradient updates on that memory before the first env step.  ``--steps 0`` with
``--offline-updates`` trains purely offline and writes the checkpoint.  Prefilled transitions are not env steps:
the random warm-up (``learning_starts`` in the agent YAML) still runs unless the agent config sets it lower.
"""
import argparse
import signal
import sys
import time
from typing import Any, List, Optional

from op3_walk.training.loop import TrainConfig
from op3_walk.training.session import ALGOS, TrainingSession, build_agent_for_env, make_gym_env


class StopOnSignal:
    """Callable ``should_stop`` for the Trainer, set by SIGINT/SIGTERM; a second signal raises KeyboardInterrupt."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum = 0
        self._previous = {}

    def install(self) -> "StopOnSignal":
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum:
            raise KeyboardInterrupt("second signal %s" % signal.Signals(signum).name)
        self.signum = signum

    def __call__(self) -> bool:
        return self.signum != 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Train a policy in-process (no ROS): the walking env or any "
                                                 "gymnasium env.")
    parser.add_argument("--env", default="", metavar="ID",
                        help="gymnasium env id, e.g. Pendulum-v1, CartPole-v1 (dqn), BipedalWalker-v3; "
                             "default: the walking env of --robot/--task")
    parser.add_argument("--robot", default=None, help="robot config name or YAML path (default plen)")
    parser.add_argument("--task", default=None, help="task config name or YAML path (default walk)")
    parser.add_argument("--algo", default="td3", choices=ALGOS)
    parser.add_argument("--agent-config", default="", help="agent YAML (default config/agents/<algo>.yaml)")
    parser.add_argument("--steps", type=int, default=20000,
                        help="env steps to train for, counted over the whole run (a resumed run continues the count); "
                             "0 with --offline-updates: offline training only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="out/train", help="folder for CSV, TensorBoard, checkpoint and curve")
    parser.add_argument("--checkpoint-every", type=int, default=5000, help="env steps between checkpoints (0: end)")
    parser.add_argument("--no-overlap", action="store_true",
                        help="act, step, observe, update in strict order (default: the updates of step t run after "
                             "the action of step t+1 is sent, as the ROS learner does; same results either way)")
    parser.add_argument("--resume", default="", help="checkpoint to resume from (same env or robot/task, algo)")
    parser.add_argument("--tensorboard", dest="tensorboard", action="store_true",
                        help="write TensorBoard scalars to <out-dir>/tb (the default)")
    parser.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", help="no TensorBoard logs")
    parser.set_defaults(tensorboard=True)
    parser.add_argument("--gui", action="store_true", help="PyBullet GUI / gymnasium human rendering (needs a display)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--prefill", default="", metavar="FILE",
                        help="recorded transitions (.npz from `replay_bag buffer`) to put in the replay memory before "
                             "training; robot, task and sizes must match this run")
    parser.add_argument("--offline-updates", type=int, default=0, metavar="N",
                        help="gradient updates on the replay memory (e.g. the prefilled transitions) before the first "
                             "env step")
    args = parser.parse_args(argv)
    if args.env and (args.robot is not None or args.task is not None):
        parser.error("--env trains on a gymnasium env; --robot/--task select the walking env: give one or the other")
    if args.offline_updates < 0:
        parser.error("--offline-updates must be >= 0")
    if args.checkpoint_every < 0:
        parser.error("--checkpoint-every must be >= 0 (0: only at the end)")
    if args.steps < 0 or (args.steps == 0 and args.offline_updates == 0):
        parser.error("--steps must be >= 1 (or 0 together with --offline-updates)")

    from op3_walk.config import ConfigError
    from op3_walk.training.checkpoint import CheckpointError
    from op3_walk.training.offline import (TransitionsError, check_fit, load_transitions, offline_updates,
                                           prefill)

    stop = StopOnSignal().install()
    env = None
    try:
        if args.env:
            env = make_gym_env(args.env, gui=args.gui)
            meta = {"env": args.env}
        else:
            from op3_walk.envs.walk_env import WalkEnv
            task = args.task or "walk"
            env = WalkEnv(robot=args.robot or "plen", task=task, gui=args.gui)
            meta = {"robot": env.robot.name, "task": task}
        agent = build_agent_for_env(args.algo, env, args.agent_config, args.seed)
        # a missing, corrupt or unfitting file is refused before any output is written
        transitions = check_fit(agent, load_transitions(args.prefill), expect=meta) if args.prefill else None
        session = TrainingSession(agent, env, TrainConfig(total_steps=args.steps, seed=args.seed,
                                                          checkpoint_every=args.checkpoint_every,
                                                          overlap_updates=not args.no_overlap),
                                  args.out_dir, meta=meta, resume=args.resume, progress=not args.no_progress,
                                  tensorboard=args.tensorboard, should_stop=stop)
        if transitions is not None:   # after --resume: a resumed replay memory is extended, not replaced
            pushed = prefill(agent, transitions)
            session.log("prefilled %d transitions from %s: replay memory holds %d"
                        % (pushed, args.prefill, len(agent.memory)))
        if args.offline_updates:
            start = time.monotonic()
            with session.trainer.lock:
                losses = offline_updates(agent, args.offline_updates)
            session.log("offline: %d gradient updates in %.1f s%s" % (
                args.offline_updates, time.monotonic() - start,
                "".join("; mean %s %.4g" % kv for kv in sorted(losses.items()))))
        summary = session.run()
        print(session.describe(summary), flush=True)
    except (ConfigError, CheckpointError, TransitionsError) as exc:
        print("train: error: %s" % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train: interrupted; the last checkpoint is in %s" % args.out_dir, file=sys.stderr)
        return 128 + (stop.signum or signal.SIGINT)
    finally:
        stop.restore()
        if env is not None:
            env.close()
    if stop.signum:
        print("train: stopped by %s at env step %d; resume with --resume %s"
              % (signal.Signals(stop.signum).name, summary.env_steps, session.checkpoint_path), flush=True)
        return 128 + stop.signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
