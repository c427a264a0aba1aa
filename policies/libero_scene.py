"""What the LIBERO oracle knows of the scene that the observation does not say: the measured
sizes of the objects, the hand and fingers, the walls of fixtures, and the geometry of a
grasp built from them. Every constant here was measured in the simulator; the comments say
how.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.libero_instructions import category

OPEN, CLOSE = -1.0, 1.0
MOVE_PER_STEP_M = 0.013
"""Hand travel per step at |action| = 1 (measured; the controller lags its 5 cm target)."""
TURN_PER_STEP_RAD = 0.1
"""Gripper turn per step at |dyaw| <= 0.3 per unit of action (measured; it saturates above)."""
SLOWDOWN_STEPS = 2.0
"""Commands are scaled to close the remaining distance in this many steps, not one: the arm
keeps moving ~1 step's worth after a stop command, so a full-gain plan overshoots."""
OPEN_GAP_M = 0.077
MAX_GRASP_M = 0.07
"""Widest object side the fingers close on; wider objects are held by their rim."""
NEAR_XY_M, NEAR_Z_M, NEAR_YAW_RAD = 0.008, 0.008, 0.08
FINGERTIP_M = 0.012
"""Fingertips reach this far below `robot0_eef_pos`: the lowest grasp height above a surface."""
PALM_M = 0.03
"""The palm is this far above `robot0_eef_pos`: tall objects are grasped near their top."""
CLEAR_M = 0.04
"""Height by which a carried object (or the open hand) clears everything on the way."""
RELEASE_M = 0.01
"""Height of the object's bottom above the receptacle's top when it is let go."""
PLACE_XY_M = 0.016
"""The object is let go once its origin is this close (in xy) to the receptacle's (LIBERO's
On check allows 3 cm; bowls let go within this ended 2-5 mm off the plate's centre)."""
REALIGN_M = 0.06
"""Once lowered over the receptacle, the object is lifted back to carry height only if its
origin is this far off: descending at the far edge of its reach the arm drifted 3.5-5 cm
outwards, and a 3 cm limit made it climb and descend again until time ran out."""
TALL_M = 0.06
"""Objects taller than this are lowered into the receptacle by the excess before release:
dropped from high they topple, and a carton held at its top can snag on an opening finger."""
RIM_M = 0.048
"""Distance from a bowl's axis to where its rim is pinched (bowls are ~11 cm wide)."""
RIM_GAP_M = 0.008
"""Finger gap closed on a bowl's rim. Lifting earlier (before the fingers are this close)
dropped bowls."""
CARRIED_GAP_M = 0.02
"""Widest finger gap still taken as holding an object once it is lifted above where it
started: a bowl tipped onto the ramekin (libero_spatial task 5) is pinched across its wall
at a slant, which left a gap of 0.012-0.018 while carried, and as it swung upright the
planner took it for a rim grasp (needing 0.012) and let it go in mid-air."""
LIFTED_M = 0.02
"""Height above its starting place above which an object between the fingers is carried."""

ROBOT_BASE_XY = (-0.66, 0.0)
"""Where the arm is mounted in the LIBERO scenes (robot0_base, measured)."""
OFF_CENTRE_M = 0.02
"""An object whose origin is this far from the hand is held off-centre (by its rim)."""
WRIST_LIMIT_RAD = 2.7
"""The last wrist joint stalls near +-2.9 rad: turns that would take it past this are skipped."""

EXTENTS_M = {
    # Object-frame bounding boxes (low corner, high corner) of the collision meshes, measured
    # once from the LIBERO scenes; the body origin is the box centre or the object's bottom.
    "alphabet_soup": ((-0.033, -0.042, -0.036), (0.033, 0.042, 0.035)),
    "basket": ((-0.087, -0.081, 0.0), (0.087, 0.081, 0.148)),
    "salad_dressing": ((-0.033, -0.074, -0.022), (0.031, 0.074, 0.022)),
    "cream_cheese": ((-0.041, -0.021, -0.01), (0.042, 0.021, 0.01)),
    "milk": ((-0.027, -0.071, -0.027), (0.027, 0.071, 0.028)),
    "tomato_sauce": ((-0.033, -0.041, -0.035), (0.033, 0.041, 0.035)),
    "butter": ((-0.039, -0.02, -0.009), (0.039, 0.02, 0.009)),
    "orange_juice": ((-0.027, -0.072, -0.027), (0.027, 0.072, 0.027)),
    "ketchup": ((-0.032, -0.074, -0.022), (0.032, 0.074, 0.022)),
    "bbq_sauce": ((-0.025, -0.017, -0.057), (0.025, 0.017, 0.057)),
    "chocolate_pudding": ((-0.042, -0.025, -0.015), (0.042, 0.025, 0.015)),
    "akita_black_bowl": ((-0.056, -0.056, 0.0), (0.056, 0.056, 0.053)),
    "cookies": ((-0.031, -0.042, -0.01), (0.031, 0.042, 0.01)),
    "glazed_rim_porcelain_ramekin": ((-0.045, -0.044, 0.0), (0.045, 0.045, 0.043)),
    "plate": ((-0.069, -0.068, -0.003), (0.07, 0.069, 0.017)),
    "wine_bottle": ((-0.022, -0.022, 0.0), (0.022, 0.022, 0.159)),
    "moka_pot": ((-0.041, -0.061, -0.067), (0.041, 0.091, 0.087)),
    "white_bowl": ((-0.042, -0.042, 0.0), (0.042, 0.042, 0.035)),
    "wooden_tray": ((-0.142, -0.088, -0.001), (0.156, 0.079, 0.081)),
}
DEFAULT_EXTENT_M = ((-0.03, -0.03, -0.03), (0.03, 0.03, 0.03))
@dataclass(frozen=True)
class Enclosure:
    """The inside of a fixture's walls (not in the observation): a box in a rotated frame."""

    centre_xy: tuple[float, float]
    axis_rad: float
    """Direction of the box's first axis in the world."""
    half_m: tuple[float, float]
    """Half sizes along the first axis and across it."""
    z_range: tuple[float, float]
    """From the floor to the top of the walls."""
    walls_m: tuple[float, float, float]
    """Distances from the axis of a bowl standing inside to what a finger can hit: ahead
    along the first axis, behind it, and to either side."""

    def contains(self, pos: np.ndarray) -> bool:
        local = rotate_xy(pos[:2] - np.array(self.centre_xy), -self.axis_rad)
        return bool(np.all(np.abs(local) < self.half_m)
                    and self.z_range[0] - 0.01 < pos[2] < self.z_range[1])

    def room(self, offset: np.ndarray) -> float:
        """Distance to the nearest wall from a point `offset` (xy) from a bowl's axis."""
        along, across = rotate_xy(offset, -self.axis_rad)
        ahead, behind, side = self.walls_m
        return float(min(ahead - along, behind + along, side - abs(across)))


ENCLOSURES = (
    # The open top drawer of the wooden cabinet (libero_spatial task 4), from its collision
    # boxes: 16 x 21 cm inside, the cabinet turned 64 degrees (the drawer pulled out along
    # it); over the 5 init states its centre moves ~1.5 cm with the cabinet, the bowl inside
    # sits within 1.5 cm of it. The bowl's axis is 7.4 cm from the drawer's front and 6.2 cm
    # from the front edge of the cabinet's top (z 1.127), which overhangs the drawer's back
    # half: a finger reaching 6.4 cm back came to rest on that edge 3 cm above the grasp.
    Enclosure((0.091, -0.140), np.deg2rad(64.0), (0.08, 0.105), (1.056, 1.122),
              walls_m=(0.074, 0.062, 0.105)),
)
OUTER_FINGER_M = RIM_M + 0.049 + 0.013
"""Reach of the open outer finger's far face from a rim-held bowl's axis: its collision mesh
is centred 4.9 cm from `robot0_eef_pos` and 1.1-1.4 cm thick (measured at a gap of 0.078)."""


def rotation(quat_xyzw: np.ndarray) -> np.ndarray:
    x, y, z, w = quat_xyzw / np.linalg.norm(quat_xyzw)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


@dataclass(frozen=True)
class Body:
    """An object's world bounding box relative to its `_pos`, and how to grasp it."""

    low: np.ndarray
    high: np.ndarray
    grasp: np.ndarray
    """Where the hand pinches it, relative to its `_pos`."""
    axis_rad: float
    """Direction the fingers close along (mod pi)."""
    width_m: float
    """Finger gap when closed on it."""
    square: bool
    """Both horizontal sides are about as wide (cans, cartons): any yaw will do."""


def body(name: str, quat: np.ndarray, clear_dir: np.ndarray) -> Body:
    """Grasp across the narrower horizontal side, at mid height but no lower than the
    fingertips allow and high enough that the palm stays above the object; objects too wide
    for the fingers (bowls) are pinched at the rim on the side `clear_dir` (a unit xy vector
    pointing away from the neighbours)."""
    low, high = (np.array(v) for v in EXTENTS_M.get(category(name), DEFAULT_EXTENT_M))
    rot = rotation(quat)
    corners = np.array([[a, b, c] for a in (low[0], high[0]) for b in (low[1], high[1])
                        for c in (low[2], high[2])]) @ rot.T
    w_low, w_high = corners.min(0), corners.max(0)
    centre = (w_low + w_high) / 2
    vertical = int(np.argmax(np.abs(rot[2])))
    sides = sorted((float(high[i] - low[i]), i) for i in range(3) if i != vertical)
    z = max(centre[2], w_low[2] + FINGERTIP_M, w_high[2] - PALM_M + 0.005)
    if sides[0][0] <= MAX_GRASP_M:
        axis = rot[:2, sides[0][1]]
        return Body(w_low, w_high, np.array([centre[0], centre[1], z]),
                    float(np.arctan2(axis[1], axis[0])), sides[0][0],
                    sides[1][0] - sides[0][0] < 0.01)
    rim = centre[:2] + RIM_M * clear_dir
    return Body(w_low, w_high, np.array([rim[0], rim[1], w_high[2] - 0.022]),
                float(np.arctan2(clear_dir[1], clear_dir[0])), RIM_GAP_M, False)


def rotate_xy(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def rim_side_in(enclosure: Enclosure, pos: np.ndarray) -> np.ndarray:
    """Side (unit xy vector) on which to pinch the rim of a bowl standing inside walls: the
    one leaving the open outer finger most room to the walls, among the sides facing the
    robot (a hand on the far side of a bowl in the drawer is at the limit of the arm's reach).

    The walls are placed relative to the bowl: the fixture is not observed and moves ~1.5 cm
    with the cabinet between init states, so the bowl's offset from the box's nominal centre
    says nothing. In the top drawer the walls in front and behind are 6.2-7.4 cm from the
    bowl's axis, where the outer finger reaches 11 cm; towards the front corner nearer the
    robot there is ~1 cm."""
    robot = np.array(ROBOT_BASE_XY) - pos[:2]
    # Sides from the one facing the robot outwards, so that of equally good sides (the two
    # diagonals of a centred bowl) the one nearer the robot is taken.
    angles = np.arctan2(robot[1], robot[0]) + np.deg2rad(sorted(range(-90, 91, 5), key=abs))
    sides = [np.array([np.cos(a), np.sin(a)]) for a in angles]
    rooms = [enclosure.room(OUTER_FINGER_M * d) for d in sides]
    return next(d for d, room in zip(sides, rooms, strict=True) if room > max(rooms) - 0.002)
