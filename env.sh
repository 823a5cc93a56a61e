# Source me (bash or zsh) after `make setup`:  source env.sh
# Gives this shell ROS1, the built catkin workspace (.ws) and the venv (.venv), so that roslaunch op3_walk ...,
# rostopic echo, rosbag and the op3_walk scripts all work.
if [ -n "${BASH_SOURCE:-}" ]; then _op3_root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
elif [ -n "${ZSH_VERSION:-}" ]; then _op3_root="$(cd "$(dirname "${(%):-%x}")" && pwd)"
else _op3_root="$(pwd)"; fi
if [ -n "${ZSH_VERSION:-}" ]; then _op3_sh=zsh; else _op3_sh=bash; fi

# catkin's setup scripts read unset variables: relax `set -u` while sourcing them, restore it after.
case $- in *u*) _op3_nounset=1; set +u ;; *) _op3_nounset="" ;; esac

if [ ! -f "$_op3_root/.ws/devel/setup.$_op3_sh" ]; then
  echo "op3_walk: workspace not built yet; run 'make setup' in $_op3_root first" >&2
else
  if [ -f /opt/ros/noetic/setup.$_op3_sh ] && [ -z "${ROS_DISTRO:-}" ]; then
    . /opt/ros/noetic/setup.$_op3_sh
  fi
  . "$_op3_root/.ws/devel/setup.$_op3_sh"
  export VIRTUAL_ENV="$_op3_root/.venv"
  case ":$PATH:" in *":$VIRTUAL_ENV/bin:"*) ;; *) export PATH="$VIRTUAL_ENV/bin:$PATH" ;; esac
  export OP3_WALK_ROOT="$_op3_root"
fi
[ -n "$_op3_nounset" ] && set -u
unset _op3_root _op3_sh _op3_nounset
