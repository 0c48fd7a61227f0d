"""Narrations of the synthetic world, in Ego-Exo4D's atomic-description style ("C picks up ...").

Two annotators phrase the same action differently and narrate it at slightly different moments of
its manipulation phase, so both are true to what the videos show at their timestamps.
"""

from __future__ import annotations

import random

from .script import Action, TakeScript

ANNOTATOR_TEMPLATES = (
    {
        "pick_up": "C picks up the {obj} with the {hand} hand.",
        "put_down": "C puts down the {obj} on the table.",
        "move_left": "C moves the {obj} to the left with the {hand} hand.",
        "move_right": "C moves the {obj} to the right with the {hand} hand.",
        "pour": "C pours from the {obj} into the bowl.",
        "shake": "C shakes the {obj} with the {hand} hand.",
    },
    {
        "pick_up": "C lifts the {obj} off the table.",
        "put_down": "C places the {obj} back on the table with the {hand} hand.",
        "move_left": "C slides the {obj} to the left.",
        "move_right": "C slides the {obj} to the right.",
        "pour": "C pours {colour} liquid from the {obj} into the bowl.",
        "shake": "C shakes the {obj} in the {hand} hand.",
    },
)
# Where in its action each annotator narrates (fraction of the action's duration): inside the
# manipulation phase of every verb (script.scene_at), so the clip around it shows the action.
ANNOTATOR_POSITION = (0.5, 0.62)
FIRST_PERSON = {  # captions for EgoIT: the same facts in the first person
    "pick_up": "I pick up the {obj} with my {hand} hand.",
    "put_down": "I put the {obj} down on the table.",
    "move_left": "I move the {obj} to the left.",
    "move_right": "I move the {obj} to the right.",
    "pour": "I pour from the {obj} into the bowl.",
    "shake": "I shake the {obj} in my {hand} hand.",
}


def describe(script: TakeScript, action: Action, templates: dict[str, str]) -> str:
    obj = script.objects[action.obj]
    return templates[action.verb].format(obj=obj.name, colour=obj.colour, hand=action.hand)


def narrate(script: TakeScript, annotator: int, rng: random.Random) -> list[tuple[float, str, Action]]:
    """``(timestamp_sec, text, action)`` for every action, as annotator ``annotator`` (0 or 1) would."""
    narrations = []
    for action in script.actions:
        position = ANNOTATOR_POSITION[annotator] + rng.uniform(-0.05, 0.05)
        timestamp = round(action.start + position * (action.end - action.start), 5)
        narrations.append((timestamp, describe(script, action, ANNOTATOR_TEMPLATES[annotator]), action))
    return narrations


def grasp_details(script: TakeScript, action: Action) -> list[str]:
    """Extra true descriptions of an action's manipulation phase (the hand holds the object for every
    verb), narrated at the same instant as the action (planted duplicate timestamps)."""
    obj = script.objects[action.obj]
    return [f"C grasps the {obj.name}.", f"C holds the {obj.name} with the {action.hand} hand."]
