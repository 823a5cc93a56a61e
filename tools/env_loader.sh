#!/usr/bin/env bash
# roslaunch env-loader for op3_walk on another machine:
#   <machine name="host_b" address="192.168.1.12" user="robot" env-loader="/home/robot/op3_walk/tools/env_loader.sh"/>
# roslaunch logs in over SSH and runs `env ROS_MASTER_URI=<the master> <this script> roslaunch --child ...` there;
# this script gives that command what `source env.sh` gives a shell (ROS1, the catkin workspace .ws, the venv),
# then exec "$@".  It runs from a checkout of op3_walk (next to env.sh, `make setup` done on that machine) or, when
# installed into a catkin install space (<prefix>/lib/op3_walk or <prefix>/share/op3_walk/...), from that space.
#
# ROS_IP: nodes on this machine must announce an address the other machines can reach.  Unless ROS_IP or
# ROS_HOSTNAME is already set (e.g. in /etc/environment, or ~/.ssh/environment with PermitUserEnvironment), it is
# set to the address this machine was reached on by the SSH connection roslaunch made (SSH_CONNECTION).
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"

if [ -f "$here/../env.sh" ] && [ -f "$here/../package.xml" ]; then
  # a checkout: tools/ next to env.sh
  # shellcheck disable=SC1091
  . "$here/../env.sh"
  if [ -z "${OP3_WALK_ROOT:-}" ]; then
    echo "op3_walk env-loader on $(hostname): the workspace of $here/.. is not built; run 'make setup' there" >&2
    exit 1
  fi
else
  # an install space: the first folder above this script holding a catkin setup.bash
  prefix="$here"
  while [ "$prefix" != "/" ] && ! { [ -f "$prefix/setup.bash" ] && [ -f "$prefix/.catkin" ]; }; do
    prefix="$(dirname "$prefix")"
  done
  if [ "$prefix" = "/" ]; then
    echo "op3_walk env-loader on $(hostname): neither a checkout (env.sh) nor a catkin install space above $here" >&2
    exit 1
  fi
  case $- in *u*) nounset=1; set +u ;; *) nounset="" ;; esac
  # shellcheck disable=SC1091
  . "$prefix/setup.bash"
  [ -n "$nounset" ] && set -u
fi

if [ -z "${ROS_IP:-}" ] && [ -z "${ROS_HOSTNAME:-}" ] && [ -n "${SSH_CONNECTION:-}" ]; then
  # SSH_CONNECTION = "client_address client_port server_address server_port"
  read -r _ _ ssh_server_address _ <<<"$SSH_CONNECTION"
  export ROS_IP="${ssh_server_address#::ffff:}"
fi

if [ $# -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]  (runs COMMAND with ROS, the op3_walk workspace and its venv)" >&2
  exit 2
fi
exec "$@"
