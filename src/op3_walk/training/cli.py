"""``train``: in-process training without ROS (same session, loop and outputs as learner_node).

Trains on the walking env (``--robot``/``--task``) or on any gymnasium env (``--env Pendulum-v1``,
``--env CartPole-v1`` for DQN, ``--env BipedalWalker-v3``).  SIGINT (Ctrl-C) or SIGTERM ends the run cleanly after
the current env step, with a final checkpoint; a second signal interrupts at once (the final checkpoint is still
attempted).  Exit status: 0 when the step budget is done, 128 + the signal number after a stop by signal, 2 for a
usage or config error.
"""
import argparse
import signal
import sys
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
                        help="env steps to train for, counted over the whole run (a resumed run continues the count)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="out/train", help="folder for CSV, TensorBoard, checkpoint and curve")
    parser.add_argument("--checkpoint-every", type=int, default=5000, help="env steps between checkpoints (0: end)")
    parser.add_argument("--resume", default="", help="checkpoint to resume from (same env or robot/task, algo)")
    parser.add_argument("--tensorboard", dest="tensorboard", action="store_true",
                        help="write TensorBoard scalars to <out-dir>/tb (the default)")
    parser.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", help="no TensorBoard logs")
    parser.set_defaults(tensorboard=True)
    parser.add_argument("--gui", action="store_true", help="PyBullet GUI / gymnasium human rendering (needs a display)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.env and (args.robot is not None or args.task is not None):
        parser.error("--env trains on a gymnasium env; --robot/--task select the walking env: give one or the other")

    from op3_walk.config import ConfigError
    from op3_walk.training.checkpoint import CheckpointError

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
        session = TrainingSession(agent, env, TrainConfig(total_steps=args.steps, seed=args.seed,
                                                          checkpoint_every=args.checkpoint_every),
                                  args.out_dir, meta=meta, resume=args.resume, progress=not args.no_progress,
                                  tensorboard=args.tensorboard, should_stop=stop)
        summary = session.run()
        print(session.describe(summary), flush=True)
    except (ConfigError, CheckpointError) as exc:
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
