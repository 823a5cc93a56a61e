"""``train``: in-process training without ROS (same session, loop and outputs as learner_node)."""
import argparse
from typing import List, Optional

from op3_walk.training.loop import TrainConfig
from op3_walk.training.session import ALGOS, TrainingSession, build_agent


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Train a walking policy in-process (no ROS).")
    parser.add_argument("--robot", default="plen", help="robot config name or YAML path (default plen)")
    parser.add_argument("--task", default="walk", help="task config name or YAML path (default walk)")
    parser.add_argument("--algo", default="td3", choices=ALGOS)
    parser.add_argument("--agent-config", default="", help="agent YAML (default config/agents/<algo>.yaml)")
    parser.add_argument("--steps", type=int, default=20000, help="env steps to train for")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="out/train", help="folder for CSV, checkpoint and curve")
    parser.add_argument("--checkpoint-every", type=int, default=5000, help="env steps between checkpoints (0: end)")
    parser.add_argument("--resume", default="", help="checkpoint to resume from")
    parser.add_argument("--gui", action="store_true", help="PyBullet GUI window (needs a display)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from op3_walk.envs.walk_env import WalkEnv
    env = WalkEnv(robot=args.robot, task=args.task, gui=args.gui)
    try:
        agent = build_agent(args.algo, env.observation_space.shape[0], env.action_space.shape[0],
                            args.agent_config, args.seed)
        session = TrainingSession(agent, env, TrainConfig(total_steps=args.steps, seed=args.seed,
                                                          checkpoint_every=args.checkpoint_every),
                                  args.out_dir, meta={"robot": env.robot.name, "task": args.task},
                                  resume=args.resume, progress=not args.no_progress)
        summary = session.run()
        print(session.describe(summary))
    finally:
        env.close()
    return 0
