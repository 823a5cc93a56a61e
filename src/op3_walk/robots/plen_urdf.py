"""Generate ``urdf/plen.urdf`` from ``config/robots/plen.yaml`` and the PLEN geometry below.

Joint names, limits, effort and velocity come from the YAML; this module only knows where each kind of joint sits
and what it carries.  Geometry is written for the left side and mirrored (y -> -y) for the right; mirroring a rotation
axis flips its x and z parts, so roll and yaw axes change sign on the right and pitch axes do not, which keeps one set
of limit numbers and "positive roll/yaw = outward" on both sides.

Frames: ``base_link`` (the massless root, REP 105) = the ``torso`` link frame, origin at the centre of the torso
box.  Each link's frame is at its parent joint.  Collision geometry is one primitive per link (box or cylinder); the
visual is the same shape; inertia is the solid shape's.  The writing itself (shapes, XML, mirroring, the command
line) is ``op3_walk.robots.urdf_writer``, shared with the OP3.

    python -m op3_walk.robots.plen_urdf          # rewrite urdf/plen.urdf
    python -m op3_walk.robots.plen_urdf --check  # exit 1 if the committed file is stale
"""
import sys

from op3_walk.robots.urdf_writer import Box, Cylinder, Segment, UrdfModel

PITCH_AXIS = (0.0, -1.0, 0.0)  # positive pitch swings the limb forward (toward +x)
ROLL_AXIS = (1.0, 0.0, 0.0)    # left side: positive roll moves the limb toward +y (outward)
YAW_AXIS = (0.0, 0.0, 1.0)     # left side: positive yaw turns the toe toward +y (outward)

MATERIALS = {  # name -> RGBA
    "shell": (0.92, 0.92, 0.90, 1.0),
    "servo": (0.22, 0.22, 0.25, 1.0),
    "sole": (0.95, 0.45, 0.10, 1.0),
}

# PLEN body: 0.496 kg in total.  The torso carries the shell (44 g), the battery (64 g) and the four servos mounted
# in it (hip yaw and shoulder pitch, 12 g each).
TORSO_SHAPE = Box((0.045, 0.048, 0.075))
TORSO_MASS = 0.156
TORSO_MATERIAL = "shell"

HIP_Y = 0.025          # lateral hip offset, m: 50 mm between leg axes leaves 9 mm between the 41 mm wide feet
TORSO_HALF_Z = 0.0375  # hip yaw axes sit on the torso's bottom face
HIP_DROP = 0.022       # hip yaw joint -> hip point (where the yaw, roll and pitch axes meet), m
THIGH = 0.032          # hip pitch -> knee, m
SHIN = 0.040           # knee -> ankle point (where the ankle pitch and roll axes meet), m
ANKLE_TO_SOLE = 0.030  # ankle point height above the sole, m
SOLE = (0.063, 0.041, 0.010)  # foot plate length (x), width (y), thickness (z), m

# Axes meet in one hip point and one ankle point (as on the OP3), which gives the legs a closed-form inverse
# kinematics (op3_walk.robots.kinematics); the servo blocks still hang where their masses are.
SEGMENTS = {  # kind -> Segment, all left side
    # leg: yaw, roll, pitch at the hip; knee; pitch, roll at the ankle
    "hip_yaw": Segment(None, (0.0, HIP_Y, -TORSO_HALF_Z), YAW_AXIS, "hip_yaw_link",
                       Cylinder(0.010, 0.010, (0.0, 0.0, -0.005)), 0.012, "servo"),
    "hip_roll": Segment("hip_yaw", (0.0, 0.0, -HIP_DROP), ROLL_AXIS, "hip_roll_link",
                        Box((0.022, 0.020, 0.012), (0.0, 0.0, 0.006)), 0.012, "servo"),
    "hip_pitch": Segment("hip_roll", (0.0, 0.0, 0.0), PITCH_AXIS, "thigh",
                         Box((0.022, 0.024, THIGH), (0.0, 0.0, -THIGH / 2)), 0.040, "shell"),
    "knee": Segment("hip_pitch", (0.0, 0.0, -THIGH), PITCH_AXIS, "shin",
                    Box((0.020, 0.024, SHIN), (0.0, 0.0, -SHIN / 2)), 0.024, "shell"),
    "ankle_pitch": Segment("knee", (0.0, 0.0, -SHIN), PITCH_AXIS, "ankle_link",
                           Box((0.022, 0.024, 0.012), (0.0, 0.0, -0.006)), 0.036, "servo"),
    "ankle_roll": Segment("ankle_pitch", (0.0, 0.0, 0.0), ROLL_AXIS, "foot",
                          Box(SOLE, (0.005, 0.0, -ANKLE_TO_SOLE + SOLE[2] / 2)), 0.015, "sole"),
    # arm: shoulder pitch on the torso side, upper-arm roll, elbow
    "shoulder_pitch": Segment(None, (0.0, 0.030, 0.025), PITCH_AXIS, "shoulder_link",
                              Box((0.016, 0.012, 0.016), (0.0, 0.006, 0.0)), 0.012, "servo"),
    "shoulder_roll": Segment("shoulder_pitch", (0.0, 0.012, 0.0), ROLL_AXIS, "upper_arm",
                             Box((0.016, 0.016, 0.035), (0.0, 0.0, -0.0175)), 0.012, "shell"),
    "elbow": Segment("shoulder_roll", (0.0, 0.0, -0.035), PITCH_AXIS, "forearm",
                     Box((0.014, 0.014, 0.035), (0.0, 0.0, -0.0175)), 0.007, "shell"),
}

MODEL = UrdfModel("op3_walk.robots.plen_urdf", __doc__, default_robot="plen",
                  torso=(TORSO_SHAPE, TORSO_MASS, TORSO_MATERIAL), segments=SEGMENTS, materials=MATERIALS,
                  right_negated=False)  # mirrored axes: one angle means the same motion on both sides
generate = MODEL.generate
link_masses = MODEL.link_masses
main = MODEL.main


if __name__ == "__main__":
    sys.exit(main())
