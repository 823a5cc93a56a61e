"""Generate ``urdf/op3.urdf`` (ROBOTIS OP3) from ``config/robots/op3.yaml`` and the OP3 geometry below.

Joint names, limits, effort and velocity come from the YAML; this module knows where each joint sits, its axis and
what its link carries.  Sources (facts only): ROBOTIS-OP3-Common ``robotis_op3.urdf.xacro`` and ROBOTIS-OP3
``op3_kinematics_dynamics.cpp`` for joint origins, axes and link masses / centres of mass (the latter also in the
MuJoCo Menagerie ``robotis_op3`` model, with its two-box feet); the collision boxes here are the solid boxes whose
inertia about the link axes matches those models' (rounded to the mm), centred on each link's centre of mass.

Joint axes are ROBOTIS's, so an angle means on this model what it means on the robot's framework topics
(``/robotis/present_joint_states``).  The left side is written here and mirrored for the right with the axis
negated (``right_negated``): ROBOTIS's right axes are the mirrored left ones reversed, so a symmetric pose reads
r = -l for every joint (e.g. ``l_knee`` +1.14, ``r_knee`` -1.14 rad).

Frames: the torso link is ROBOTIS's ``body_link`` (origin at the hip yaw joints' height, between them), fixed under
the massless root ``base_link`` (REP 105) with an identity origin; link names are ROBOTIS's.  Head and arm joints
sit where ROBOTIS puts them.  The legs keep ROBOTIS's hip point, axes, thigh,
shin and ankle height but place every leg joint frame on the leg's vertical line (ROBOTIS offsets the roll and pitch
frames sideways along their own axes and the knee 0.1 mm forward), so that at zero angles the hip yaw, roll and pitch
axes meet in the hip point, the ankle pitch and roll axes meet in the ankle point, hip, knee and ankle are vertically
aligned and the sole link (``*_ank_roll_link``, 24 mm ahead of ROBOTIS's frame) has its origin at the ankle point:
the contract of the closed-form leg inverse kinematics (``op3_walk.robots.kinematics``).

    python -m op3_walk.robots.op3_urdf          # rewrite urdf/op3.urdf
    python -m op3_walk.robots.op3_urdf --check  # exit 1 if the committed file is stale
"""
import sys

from op3_walk.robots.urdf_writer import Box, Segment, UrdfModel

# Axes, left side (ROBOTIS).  Meanings at zero angles, left side (the right side moves the other way):
X_AXIS = (1.0, 0.0, 0.0)       # l_ank_roll: + lifts the outer sole edge; l_el: + raises the forearm
NEG_X_AXIS = (-1.0, 0.0, 0.0)  # l_hip_roll: + swings the leg inward (to -y); l_sho_roll: + lowers the arm
Y_AXIS = (0.0, 1.0, 0.0)       # l_hip_pitch: + swings the leg back; l_knee: + flexes; l_sho_pitch: + arm back
NEG_Y_AXIS = (0.0, -1.0, 0.0)  # l_ank_pitch: + lifts the toe; head_tilt: + looks up
Z_AXIS = (0.0, 0.0, 1.0)       # head_pan: + looks left
NEG_Z_AXIS = (0.0, 0.0, -1.0)  # l_hip_yaw: + turns the toe inward (clockwise seen from above)

MATERIALS = {  # name -> RGBA
    "frame": (0.80, 0.80, 0.82, 1.0),
    "servo": (0.12, 0.12, 0.14, 1.0),
    "sole": (0.30, 0.30, 0.33, 1.0),
}

# Trunk (body_link): 1.349 kg; 3.147 kg in all.
TORSO = (Box((0.110, 0.127, 0.119), (-0.0150, 0.0001, 0.0658)), 1.34928, "frame")

HIP_Y = 0.035           # lateral offset of each hip yaw axis from the body origin, m
HIP_DROP = 0.0285       # hip yaw joint -> hip point (where the yaw, roll and pitch axes meet), m
THIGH = 0.11015         # hip point -> knee axis, m
SHIN = 0.110            # knee axis -> ankle point (where the ankle pitch and roll axes meet), m
ANKLE_TO_SOLE = 0.0305  # ankle point height above the sole, m
SOLE = (0.127, 0.078, 0.008)  # foot plate length (x), width (y), thickness (z), m
SOLE_Y = 0.013          # sole centre outward of the ankle point, m

# Arms and head: ROBOTIS joint origins; centres of mass relative to each link frame.
SEGMENTS = {  # kind -> Segment, left side for the sided joints
    "head_pan": Segment(None, (-0.001, 0.0, 0.1365), Z_AXIS, "head_pan_link",
                        Box((0.028, 0.056, 0.030), (0.0023, 0.0, 0.0082)), 0.01176, "servo"),
    "head_tilt": Segment("head_pan", (0.010, 0.019, 0.0285), NEG_Y_AXIS, "head_tilt_link",
                         Box((0.034, 0.053, 0.081), (0.0023, -0.0186, 0.0277)), 0.13631, "frame"),
    "sho_pitch": Segment(None, (-0.001, 0.060, 0.111), Y_AXIS, "sho_pitch_link",
                         Box((0.056, 0.030, 0.028), (0.0, 0.0082, -0.0023)), 0.01176, "servo"),
    "sho_roll": Segment("sho_pitch", (0.019, 0.0285, -0.010), NEG_X_AXIS, "sho_roll_link",
                        Box((0.035, 0.121, 0.028), (-0.0184, 0.0451, 0.0003)), 0.17758, "servo"),
    "el": Segment("sho_roll", (0.0, 0.0904, -0.0001), X_AXIS, "el_link",
                  Box((0.052, 0.131, 0.029), (-0.0190, 0.0703, 0.0038)), 0.04127, "frame"),
    # leg: yaw, roll, pitch at the hip point; knee; pitch, roll at the ankle point
    "hip_yaw": Segment(None, (0.0, HIP_Y, 0.0), NEG_Z_AXIS, "hip_yaw_link",
                       Box((0.059, 0.026, 0.029), (-0.0016, 0.0, -0.0077)), 0.01181, "frame"),
    "hip_roll": Segment("hip_yaw", (0.0, 0.0, -HIP_DROP), NEG_X_AXIS, "hip_roll_link",
                        Box((0.079, 0.032, 0.046), (-0.0201, 0.0003, -0.0121)), 0.17886, "servo"),
    "hip_pitch": Segment("hip_roll", (0.0, 0.0, 0.0), Y_AXIS, "hip_pitch_link",
                         Box((0.029, 0.042, 0.096), (0.0007, 0.0, -0.0841)), 0.11543, "frame"),
    "knee": Segment("hip_pitch", (0.0, 0.0, -THIGH), Y_AXIS, "knee_link",
                    Box((0.029, 0.061, 0.086), (0.0001, -0.0025, -0.0550)), 0.04015, "frame"),
    "ank_pitch": Segment("knee", (0.0, 0.0, -SHIN), NEG_Y_AXIS, "ank_pitch_link",
                         Box((0.079, 0.032, 0.046), (-0.0201, 0.0003, 0.0121)), 0.17886, "servo"),
    "ank_roll": Segment("ank_pitch", (0.0, 0.0, 0.0), X_AXIS, "ank_roll_link",
                        Box(SOLE, (0.0, SOLE_Y, -ANKLE_TO_SOLE + SOLE[2] / 2)), 0.06934, "sole"),
}

MODEL = UrdfModel("op3_walk.robots.op3_urdf", __doc__, default_robot="op3", torso=TORSO, segments=SEGMENTS,
                  materials=MATERIALS, right_negated=True)  # ROBOTIS: a symmetric pose reads r = -l
main = MODEL.main


if __name__ == "__main__":
    sys.exit(main())
