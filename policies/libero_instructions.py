"""From a LIBERO instruction to the scene's object names: what to pick and where to put it.

The oracle sees object poses by name (`akita_black_bowl_2_pos`), the instruction names them in
words ("the black bowl between the plate and the ramekin"); this module maps one to the other,
resolving an ambiguous noun by the landmarks the phrase mentions.
"""

from __future__ import annotations

import re

import numpy as np

ALIASES = {"cookie box": "cookies", "cream cheese box": "cream_cheese",
           "white mug": "porcelain_mug", "yellow and white mug": "white_yellow_mug",
           "red mug": "red_coffee_mug", "tray": "wooden_tray", "frying pan": "chefmate_8_frypan"}
LANDMARKS_XY = {
    # Fixtures are not in the observation; their places in the libero_spatial scene (measured).
    "table center": (-0.075, 0.0), "stove": (-0.411, -0.134), "wooden cabinet": (0.037, -0.26),
    "top drawer of the wooden cabinet": (0.085, -0.13)}

PICK = re.compile(r"(?:pick up|put) (?:both )?the (?P<object>.+?) and (?:place|put) it "
                  r"(?:in|on|into|inside|on top of) the (?P<target>.+)")
PUT = re.compile(r"put (?:both )?the (?P<object>.+?) (?:in|on|into|inside|on top of) "
                 r"the (?P<target>.+)")
RELATION = re.compile(r"(?P<noun>.+?) (?:between|next to|on|from|in) (?:the )?(?P<ref>.+)")


def category(name: str) -> str:
    """'akita_black_bowl_2' -> 'akita_black_bowl'."""
    return re.sub(r"_\d+$", "", name)


def candidates(noun: str, names: list[str]) -> list[str]:
    """Objects of the scene a noun phrase can mean ('black bowl' -> akita_black_bowl_1, _2)."""
    key = ALIASES.get(noun, noun.replace(" ", "_"))
    return sorted(n for n in names if category(n) == key or category(n).endswith("_" + key))


def resolve(phrase: str, positions: dict[str, np.ndarray]) -> str | None:
    """The object a phrase names. Of several matches, the one nearest (in xy) to what the
    phrase refers to: 'black bowl between the plate and the ramekin' -> the bowl nearest the
    midpoint of plate and ramekin. None if nothing in the scene matches."""
    names = list(positions)
    found = candidates(phrase, names)
    relation = RELATION.fullmatch(phrase)
    if found or relation is None:
        return found[0] if found else None
    found = candidates(relation["noun"], names)
    points = []
    for ref in relation["ref"].split(" and the "):
        if ref in LANDMARKS_XY:
            points.append(np.array(LANDMARKS_XY[ref]))
        elif refs := candidates(ref, names):
            points.append(positions[refs[0]][:2])
    if not found or not points:
        return found[0] if found else None
    anchor = np.mean(points, axis=0)
    return min(found, key=lambda n: float(np.linalg.norm(positions[n][:2] - anchor)))


def parse_instruction(instruction: str, positions: dict[str, np.ndarray]
                      ) -> tuple[str, str] | None:
    """(object, receptacle) names for a pick-and-place instruction, else None."""
    text = instruction.lower().strip().rstrip(".")
    match = PICK.fullmatch(text) or PUT.fullmatch(text)
    if match is None:
        return None
    obj = resolve(match["object"].split(" and the ")[0], positions)
    target = resolve(match["target"], positions)
    return (obj, target) if obj and target and obj != target else None
