#!/usr/bin/env bash
# `make demo`: a short headless training session through ROS on PyBullet.
# Uses the ROS master at $ROS_MASTER_URI if one answers, else starts roscore (and stops it at the end).
# Leaves in the output folder: checkpoint.pt, episodes.csv, learning_curve.png, session.bag, session_status.
# Any further NAME:=VALUE arguments go to train.launch (e.g. robot:=op3 task:=...).
# The launch runs through `rosrun op3_walk session` (src/op3_walk/ros/launch_session.py), which exits non-zero
# unless the learner reports that it completed: roslaunch itself exits 0 when a required node dies.
# Exit status: 0 when the learner completed its budget (it writes session_status "completed" and ends the launch
# itself); 1 when it did not (it crashed or failed), or when an output is missing; 2 on a usage error; 130 on Ctrl-C.
set -euo pipefail
STEPS=12000
OUT=out/demo
LAUNCH_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) STEPS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *:=*) LAUNCH_ARGS+=("$1"); shift ;;
    *) echo "usage: demo.sh [--steps N] [--out DIR] [train.launch ARG:=VALUE ...]" >&2; exit 2 ;;
  esac
done
command -v roslaunch >/dev/null || { echo "demo: ROS not in this shell (source env.sh)" >&2; exit 1; }
OUT="$(mkdir -p "$OUT" && cd "$OUT" && pwd)"
rm -f "$OUT"/checkpoint.pt "$OUT"/episodes.csv "$OUT"/learning_curve.png "$OUT"/session*.bag* "$OUT"/session_status

export ROS_MASTER_URI="${ROS_MASTER_URI:-http://localhost:11311}"
ROSCORE_PID=""
LAUNCH_PID=""
cleanup() {
  if [ -n "$LAUNCH_PID" ] && kill -0 "$LAUNCH_PID" 2>/dev/null; then kill -INT "$LAUNCH_PID"; wait "$LAUNCH_PID" || true; fi
  if [ -n "$ROSCORE_PID" ]; then
    kill -INT "$ROSCORE_PID" 2>/dev/null || true
    wait "$ROSCORE_PID" 2>/dev/null || true
    echo "demo: stopped the roscore it started"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if python -c 'import rosgraph, sys; sys.exit(0 if rosgraph.is_master_online() else 1)' 2>/dev/null; then
  echo "demo: using the running ROS master at $ROS_MASTER_URI"
else
  PORT="$(python -c 'import os, urllib.parse; print(urllib.parse.urlparse(os.environ["ROS_MASTER_URI"]).port or 11311)')"
  echo "demo: starting roscore on port $PORT (log: $OUT/roscore.log)"
  roscore -p "$PORT" > "$OUT/roscore.log" 2>&1 &
  ROSCORE_PID=$!
  for _ in $(seq 100); do
    python -c 'import rosgraph, sys; sys.exit(0 if rosgraph.is_master_online() else 1)' 2>/dev/null && break
    kill -0 "$ROSCORE_PID" 2>/dev/null || { cat "$OUT/roscore.log" >&2; echo "demo: roscore failed" >&2; exit 1; }
    sleep 0.2
  done
fi

echo "demo: training TD3 on PLEN for $STEPS env steps (watch from another shell: source env.sh;"
echo "      rostopic echo /walker/episode ; rostopic hz /walker/state)"
START=$(date +%s)
rosrun op3_walk session train.launch headless:=true record:=true steps:="$STEPS" out_dir:="$OUT" seed:=0 \
  ${LAUNCH_ARGS[@]+"${LAUNCH_ARGS[@]}"} &
LAUNCH_PID=$!
RC=0
wait "$LAUNCH_PID" || RC=$?
LAUNCH_PID=""
echo "demo: training session took $(( $(date +%s) - START )) s"
# The learner writes session_status at its normal end; a crash writes nothing (roslaunch still exits 0, the
# session wrapper does not).
STATUS="$(cat "$OUT/session_status" 2>/dev/null || true)"
if [ "$RC" != 0 ] || [ "$STATUS" != completed ]; then
  echo "demo: FAILED: the training session did not complete (session exit status $RC, learner status:" \
       "${STATUS:-none written}); see the log above" >&2
  exit 1
fi

missing=0
for f in checkpoint.pt episodes.csv learning_curve.png session.bag; do
  if [ -s "$OUT/$f" ]; then echo "demo: wrote $OUT/$f"; else echo "demo: MISSING $OUT/$f" >&2; missing=1; fi
done
[ "$missing" = 0 ] || exit 1
rosbag info "$OUT/session.bag" | sed -n '/^topics:/,$p'
python - "$OUT/episodes.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
ret = [float(r["episode_return"]) for r in rows]
dist = [float(r["distance_m"]) for r in rows]
sps = [float(r["env_steps_per_s"]) for r in rows]
k = max(1, len(rows) // 5)
print("demo: %d episodes; mean return first %d: %.2f, last %d: %.2f; best distance %.3f m; "
      "median env steps/s %.0f" % (len(rows), k, sum(ret[:k]) / k, k, sum(ret[-k:]) / k, max(dist),
                                     sorted(sps)[len(sps) // 2]))
PY
