#!/usr/bin/env bash
# Bootstrap everything `make demo` / `make test` need, idempotently; a second run only checks (a few seconds).
#   1. ROS1: use /opt/ros/noetic if present, else Debian's ROS packages; install those with apt if missing.
#   2. .venv: a venv made from the ROS Python with --system-site-packages (rospy stays the system one).
#   3. requirements.txt into .venv (re-run only when the file changes).
#   4. catkin workspace .ws/ (git-ignored) holding this package, built with the ROS Python named explicitly.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STAMPS="$ROOT/.stamps"
mkdir -p "$STAMPS"
ROS_PY=/usr/bin/python3          # the interpreter ROS1 is built for, on Noetic and on Debian 12 alike
NOETIC_SETUP=/opt/ros/noetic/setup.bash
APT_PACKAGES="ros-core-python-dev python3-rostest python3-rosbag python3-venv cmake g++"
# Run-time extras the nodes and tests use (rviz is declared in package.xml but not installed here: Qt, large).
# openssh-server and iproute2: the multi-host test (tests/integration/test_multihost.py) runs sshd in network namespaces
APT_EXTRAS="ros-robot-state-publisher python3-tf2-msgs python3-tf2-ros python3-nav-msgs openssh-server iproute2"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }

# --- 1. ROS1 -----------------------------------------------------------------------------------------------
ros_ok() {
  if [ -f "$NOETIC_SETUP" ]; then
    return 0
  fi
  command -v roscore >/dev/null 2>&1 && command -v catkin_make >/dev/null 2>&1 \
    && "$ROS_PY" -c 'import rospy, rosbag, catkin, genpy, rostest, venv, ensurepip' >/dev/null 2>&1
}

if ros_ok; then
  if [ -f "$NOETIC_SETUP" ]; then log "ROS: Noetic at /opt/ros/noetic"; else log "ROS: Debian packages"; fi
else
  command -v apt-get >/dev/null 2>&1 || die "no ROS1 found (/opt/ros/noetic or Debian's ros-core-python-dev) and no apt-get to install it"
  [ "$(id -u)" = 0 ] && SUDO="" || SUDO="sudo"
  log "ROS: not found; installing Debian's ROS1 packages: $APT_PACKAGES"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $APT_PACKAGES
  ros_ok || die "ROS1 packages installed but rospy/catkin still missing for $ROS_PY"
fi

if [ -f "$NOETIC_SETUP" ]; then
  # shellcheck disable=SC1090
  set +u; source "$NOETIC_SETUP"; set -u
fi

# view.launch (robot_state_publisher), the controller's TF and odometry (tf2_msgs, nav_msgs) and the tests' TF
# lookups (tf2_ros). Small; installed on Debian when missing. On Noetic they come with ros-noetic-desktop; a bare
# ros-base gets a hint.
extras_ok() {
  [ -x /usr/sbin/sshd ] && command -v ip >/dev/null 2>&1 && "$ROS_PY" -c 'import tf2_msgs.msg, tf2_ros, nav_msgs.msg, diagnostic_msgs.msg, std_srvs.srv, rosgraph_msgs.msg' \
      >/dev/null 2>&1 \
    && { [ -x /usr/lib/robot_state_publisher/robot_state_publisher ] \
         || [ -x /opt/ros/noetic/lib/robot_state_publisher/robot_state_publisher ]; }
}
if ! extras_ok; then
  if [ -f "$NOETIC_SETUP" ]; then
    log "ROS: robot_state_publisher, tf2_ros or nav_msgs missing; view.launch and the tests need:" \
      "sudo apt-get install ros-noetic-robot-state-publisher ros-noetic-tf2-msgs ros-noetic-tf2-ros ros-noetic-nav-msgs openssh-server iproute2"
  elif command -v apt-get >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] && SUDO="" || SUDO="sudo"
    log "ROS: installing $APT_EXTRAS"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $APT_EXTRAS >/dev/null \
      || { $SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $APT_EXTRAS >/dev/null; } \
      || die "could not install $APT_EXTRAS"
  fi
fi

# --- 2. venv -----------------------------------------------------------------------------------------------
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import rospy' >/dev/null 2>&1; then
  log "venv: creating .venv from $ROS_PY (--system-site-packages)"
  rm -rf "$VENV"
  "$ROS_PY" -m venv --system-site-packages "$VENV"
fi

# --- 3. Python requirements --------------------------------------------------------------------------------
REQ_HASH="$(hash_of requirements.txt)"
if [ "$(cat "$STAMPS/requirements" 2>/dev/null)" != "$REQ_HASH" ]; then
  log "pip: installing requirements.txt into .venv (torch CPU build, pybullet, gymnasium, ...)"
  # (grep drops the "Location ... is ignored" noise that some pip index configurations print)
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 \
    | { grep -v "^WARNING: Location .* is ignored" || true; }
  echo "$REQ_HASH" > "$STAMPS/requirements"
else
  log "pip: requirements up to date"
fi

# --- 4. catkin workspace -----------------------------------------------------------------------------------
# The package in the workspace is a folder of links to the repository's top-level entries (not one link to the
# root: the root holds .ws itself, and tools that follow links, like rosrun's `find -L`, would loop).
WS="$ROOT/.ws"
PKG="$WS/src/op3_walk"
[ -L "$PKG" ] && rm -f "$PKG"
mkdir -p "$PKG"
for entry in "$ROOT"/*; do
  name="$(basename "$entry")"
  case "$name" in out) continue ;; esac
  [ "$(readlink "$PKG/$name" 2>/dev/null)" = "$entry" ] || ln -sfn "$entry" "$PKG/$name"
done
for link in "$PKG"/*; do [ -e "$link" ] || rm -f "$link"; done   # entries removed from the repository
# catkin's scripts (and the devel-space relays that rosrun/roslaunch start) run with PYTHON_EXECUTABLE: the venv's
# interpreter, which is the ROS Python itself plus our packages. Named explicitly, never taken from PATH.
CATKIN_PY="$VENV/bin/python3"
BUILD_HASH="$(printf '%s\n' "$ROOT" "$CATKIN_PY" | cat - package.xml CMakeLists.txt setup.py msg/*.msg srv/*.srv \
  | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMPS/catkin" 2>/dev/null)" != "$BUILD_HASH" ] || [ ! -f "$WS/devel/setup.bash" ]; then
  log "catkin: building .ws (messages, services, python paths) with $CATKIN_PY (-> $(readlink -f "$CATKIN_PY"))"
  # PATH starts with the system directories so that no other python3 (pyenv, conda) shadows the ROS one.
  (cd "$WS" && PATH="/usr/bin:/bin:$PATH" catkin_make -DPYTHON_EXECUTABLE="$CATKIN_PY" \
      -DCATKIN_ENABLE_TESTING=OFF -DCMAKE_BUILD_TYPE=Release > "$WS/build.log" 2>&1) \
    || { tail -40 "$WS/build.log" >&2; die "catkin_make failed (full log: .ws/build.log)"; }
  echo "$BUILD_HASH" > "$STAMPS/catkin"
else
  log "catkin: workspace up to date"
fi
log "ready: source env.sh to use it from a shell"
