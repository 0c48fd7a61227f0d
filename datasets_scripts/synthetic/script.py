"""Scripts of the synthetic world: which objects lie on the table and what the camera wearer C does.

A take is a sequence of :class:`Action` s on a unit table (x: left -> right as C sees it, y: near -> far,
z: height). :func:`scene_at` gives the exact scene at any time, which both the renderer and the
narrations/questions are derived from, so the text is true to the video by construction.

The answer-bearing attributes are chosen to survive 32-64 px frames and H.264: six saturated colours,
four silhouettes, five surface patterns, and actions that move an object far (lift by 0.25 table widths, slide by
0.3, pour a coloured stream into a bowl that fills with that colour, shake with a large amplitude).

The pattern is the world's exo-only knowledge: it is visible in every view, but only the web-exo captions
(:mod:`.web_exo`) name it. ``TableObject.name`` ("red box"), which every ego-side text uses, leaves it out.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (235, 215, 20),
    "purple": (150, 40, 200),
    "cyan": (20, 205, 215),
}
SHAPES = ("box", "jar", "cup", "bottle")  # square, disc, trapezoid, tall bar with a neck
# Surface patterns, drawn over the whole object (render.PATTERN_MARKS): two brown horizontal stripes, lime
# checked quarters, an orange central dot, one pink band across the middle, or none.
PATTERNS = ("plain", "striped", "checked", "dotted", "banded")
# Every object is a container, so every action (pouring included) fits every object: the question
# text ("the red cup") never tells which action was done.
VERBS = ("pick_up", "put_down", "move_left", "move_right", "pour", "shake")
# How C's actions are phrased in answers ("What did I do with the red cup?").
VERB_ANSWERS = {
    "pick_up": "picked it up",
    "put_down": "put it down",
    "move_left": "moved it to the left",
    "move_right": "moved it to the right",
    "pour": "poured from it into the bowl",
    "shake": "shook it",
}
SCENARIOS = {  # parent_task_name -> task names (Ego-Exo4D style scenario/task pairs)
    "Cooking": ("Pour Drinks", "Mix Colours"),
    "Tidying": ("Sort Objects", "Clear the Table"),
}
# In table widths: large enough that the exo cameras show an object over 2x2 patches of the tiny model's 32-px frame
# (render.EXO_CAMERAS), where its pattern can be read.
OBJECT_SIZE = 0.22
LIFT_HEIGHT = 0.25
SLIDE_DISTANCE = 0.3
BOWL_POSITION = (0.5, 0.85)
REST = {"left": (0.25, -0.08, 0.05), "right": (0.75, -0.08, 0.05)}
HOLD_Y = 0.3  # where a held object hovers (y), in front of C
# Verb weights when C's hand is free / holding something, tuned so the six verbs are about equally
# frequent (every pick-up implies a later put-down, and moves are not always possible).
FREE_VERB_WEIGHTS = {"pick_up": 0.55, "move_left": 1.0, "move_right": 1.0}
HELD_VERB_WEIGHTS = {"put_down": 0.8, "pour": 2.0, "shake": 2.0}


@dataclass(frozen=True)
class TableObject:
    colour: str
    shape: str
    pattern: str = "plain"

    @property
    def name(self) -> str:
        """How ego-side text (narrations, EgoIT, EgoBench's colour/object/action questions) names it."""
        return f"{self.colour} {self.shape}"

    @property
    def full_name(self) -> str:
        """How the web-exo captions name it: with its pattern."""
        return f"{self.pattern} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Action:
    """One atomic action on object ``obj`` (index into the take's objects) during [start, end] seconds."""

    verb: str
    obj: int
    start: float
    end: float
    hand: str  # "left" | "right"
    target: tuple[float, float] | None = None  # put_down: where the object lands; move: its new position


@dataclass
class ObjectState:
    x: float
    y: float
    z: float = 0.0
    tilt: float = 0.0  # degrees, pouring tips the object over
    held: bool = False


@dataclass
class Scene:
    """Everything visible at one instant."""

    objects: list[ObjectState]
    hand: tuple[float, float, float]  # the active hand (x, y, z)
    hand_side: str
    bowl_colour: str | None = None
    bowl_level: float = 0.0  # 0..1
    stream: tuple[tuple[float, float, float], tuple[float, float, float]] | None = (
        None  # pour stream, colour of poured
    )


@dataclass
class TakeScript:
    """A whole take: objects, their start positions, and C's actions; durations in seconds."""

    objects: list[TableObject]
    start_positions: list[tuple[float, float]]
    actions: list[Action]
    duration: float
    parent_task_name: str
    task_name: str

    def scene_at(self, t: float) -> Scene:
        return scene_at(self, t)


def _lerp(a, b, u):
    return tuple(ai + (bi - ai) * u for ai, bi in zip(a, b))


def _smooth(u: float) -> float:
    u = min(1.0, max(0.0, u))
    return u * u * (3 - 2 * u)


def _phase(u: float, lo: float, hi: float) -> float:
    return _smooth((u - lo) / (hi - lo))


def _grip(x: float, y: float, z: float) -> tuple[float, float, float]:
    """Where the hand holds an object whose base is at (x, y, z): its near side, low, so that the
    object itself stays visible from C's eyes."""
    return (x, y - 0.45 * OBJECT_SIZE, z + 0.3 * OBJECT_SIZE)


def _free_spot(rng: random.Random, taken: list[tuple[float, float]]) -> tuple[float, float] | None:
    """A random table spot at least 1.4 object sizes from every spot in ``taken`` (None if none found)."""
    for _ in range(200):
        spot = (rng.uniform(0.12, 0.88), rng.uniform(0.15, 0.68))
        if all(math.dist(spot, other) > OBJECT_SIZE * 1.4 for other in taken):
            return spot
    return None


def _place_objects(rng: random.Random, num_objects: int) -> list[tuple[float, float]]:
    for _ in range(100):  # greedy placement occasionally paints itself into a corner: start over
        positions: list[tuple[float, float]] = []
        for _ in range(num_objects):
            spot = _free_spot(rng, positions + [BOWL_POSITION])
            if spot is None:
                break
            positions.append(spot)
        else:
            return positions
    raise ValueError(f"cannot place {num_objects} objects on the table; use fewer")


def make_script(rng: random.Random, num_actions: int = 5, num_objects: int = 4) -> TakeScript:
    """A random but valid take: distinct colours (a colour names one object), objects never overlap."""
    colours = rng.sample(sorted(COLOURS), num_objects)
    objects = [TableObject(colour, rng.choice(SHAPES), rng.choice(PATTERNS)) for colour in colours]
    positions = _place_objects(rng, num_objects)
    parent = rng.choice(sorted(SCENARIOS))
    task = rng.choice(SCENARIOS[parent])

    current = list(positions)
    held: int | None = None
    t = rng.uniform(0.4, 0.8)
    actions: list[Action] = []
    while len(actions) < num_actions:
        duration = rng.uniform(1.6, 2.2)
        if held is None:
            # Verb first (uniform over the feasible ones), then the object: keeps the six verbs about
            # equally frequent, so "what did I do" has no answer prior.
            feasible: dict[str, list[int]] = {"pick_up": list(range(num_objects)), "move_left": [], "move_right": []}
            for candidate in range(num_objects):
                others = [current[i] for i in range(num_objects) if i != candidate] + [BOWL_POSITION]
                for verb, dx in (("move_left", -SLIDE_DISTANCE), ("move_right", SLIDE_DISTANCE)):
                    new = (current[candidate][0] + dx, current[candidate][1])
                    if 0.1 <= new[0] <= 0.9 and all(math.dist(new, o) > OBJECT_SIZE * 1.2 for o in others):
                        feasible[verb].append(candidate)
            verbs = [verb for verb, objs in feasible.items() if objs]
            verb = rng.choices(verbs, weights=[FREE_VERB_WEIGHTS[v] for v in verbs])[0]
            obj = rng.choice(feasible[verb])
            x = current[obj][0]
            hand = "left" if x < 0.5 else "right"
            target = None
            if verb == "pick_up":
                held = obj
            else:
                target = (x + (-SLIDE_DISTANCE if verb == "move_left" else SLIDE_DISTANCE), current[obj][1])
                current[obj] = target
        else:
            obj = held
            hand = actions[-1].hand
            held_for = next(i for i, a in enumerate(reversed(actions)) if a.verb == "pick_up")
            # Put the object down after at most two actions in the hand, so more objects get handled.
            verb = (
                "put_down"
                if held_for >= 2
                else rng.choices(list(HELD_VERB_WEIGHTS), list(HELD_VERB_WEIGHTS.values()))[0]
            )
            target = None
            if verb == "put_down":
                others = [current[i] for i in range(num_objects) if i != obj] + [BOWL_POSITION]
                target = _free_spot(rng, others) or current[obj]  # no other free spot: where it was
                current[obj] = target
                held = None
        actions.append(Action(verb, obj, round(t, 3), round(t + duration, 3), hand, target))
        t += duration + rng.uniform(0.25, 0.6)
    return TakeScript(objects, positions, actions, round(t + 0.4, 3), parent, task)


def scene_at(script: TakeScript, t: float) -> Scene:
    """The scene at ``t`` seconds: completed actions applied fully, the running one partially."""
    objects = [ObjectState(x, y) for x, y in script.start_positions]
    hand_side = script.actions[0].hand if script.actions else "right"
    hand = REST[hand_side]
    bowl_colour, bowl_level, stream = None, 0.0, None
    for action in script.actions:
        if t < action.start:
            break
        u = 1.0 if t >= action.end else (t - action.start) / (action.end - action.start)
        obj = objects[action.obj]
        hand_side = action.hand
        rest = REST[action.hand]
        start = (obj.x, obj.y, obj.z)
        hold = (obj.x, HOLD_Y, LIFT_HEIGHT)
        if action.verb == "pick_up":
            hand = _lerp(rest, _grip(obj.x, obj.y, 0.0), _phase(u, 0.0, 0.35))
            if u > 0.35:
                lifted = _lerp((obj.x, obj.y, 0.0), hold, _phase(u, 0.35, 0.85))
                objects[action.obj] = replace(obj, x=lifted[0], y=lifted[1], z=lifted[2], held=True)
                hand = _grip(*lifted)
        elif action.verb == "put_down":
            tx, ty = action.target
            above = (tx, ty, LIFT_HEIGHT)
            if u <= 0.4:
                pos = _lerp(start, above, _phase(u, 0.0, 0.4))
            else:
                pos = _lerp(above, (tx, ty, 0.0), _phase(u, 0.4, 0.8))
            objects[action.obj] = replace(obj, x=pos[0], y=pos[1], z=pos[2], held=u < 0.8)
            grip = _grip(*pos)
            hand = grip if u < 0.8 else _lerp(grip, rest, _phase(u, 0.8, 1.0))
        elif action.verb in ("move_left", "move_right"):
            tx, ty = action.target
            hand = _lerp(rest, _grip(obj.x, obj.y, 0.0), _phase(u, 0.0, 0.3))
            if u > 0.3:
                pos = _lerp((obj.x, obj.y), (tx, ty), _phase(u, 0.3, 0.8))
                objects[action.obj] = replace(obj, x=pos[0], y=pos[1])
                hand = _grip(pos[0], pos[1], 0.0)
                if u > 0.8:
                    hand = _lerp(hand, rest, _phase(u, 0.8, 1.0))
        elif action.verb == "pour":
            over_bowl = (BOWL_POSITION[0] - 0.12, BOWL_POSITION[1] - 0.12, LIFT_HEIGHT + 0.1)
            if u <= 0.3:
                pos, tilt = _lerp(start, over_bowl, _phase(u, 0.0, 0.3)), 0.0
            elif u <= 0.8:
                pos, tilt = over_bowl, 100.0 * _phase(u, 0.3, 0.45)
                if u > 0.4:
                    stream = ((pos[0] + 0.06, pos[1], pos[2]), (BOWL_POSITION[0], BOWL_POSITION[1], 0.05))
            else:
                pos, tilt = _lerp(over_bowl, hold, _phase(u, 0.8, 1.0)), 100.0 * (1 - _phase(u, 0.8, 0.9))
            if u > 0.4:  # the bowl takes the colour of the latest pour and fills up
                bowl_colour = script.objects[action.obj].colour
                bowl_level = _phase(u, 0.4, 0.8)
            objects[action.obj] = replace(obj, x=pos[0], y=pos[1], z=pos[2], tilt=tilt, held=True)
            hand = _grip(*pos)
        elif action.verb == "shake":
            # Two slow, wide swings: visible even when 4 frames are sampled from the segment.
            offset = 0.13 * math.sin(2 * math.pi * 2 * _phase(u, 0.1, 0.9)) if 0.1 < u < 0.9 else 0.0
            objects[action.obj] = replace(obj, x=hold[0] + offset, y=hold[1], z=hold[2], held=True)
            hand = _grip(hold[0] + offset, hold[1], hold[2])
        else:  # pragma: no cover - make_script only emits VERBS
            raise ValueError(f"unknown verb {action.verb!r}")
    return Scene(objects, hand, hand_side, bowl_colour, bowl_level, stream)
