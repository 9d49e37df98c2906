"""Decisions a plan leaves to run time, between its steps: a step's `hook` names the ecosystem
module that makes them (npm's: which install scripts the offline phase runs, and the rollback of
a failed install; pip's: whether its two phases run after its one-phase install; yarn 2+'s: its
install state copied for the scripts phase and merged back, whether that phase has anything to
build, why a download with a git dependency failed). Each module offers

    before(state, step, err) -> (state, step | None, why)  # the step to run; None: skip it, why
    failed(state, err)                                      # a step failed: undo what it must
    done(state)                                             # the steps succeeded
    likely(step) -> bool  (optional)                        # a guess that the step will run

The first step without a hook (the project's own `prepare`) ends the hooked group: what came
before it is kept, as npm keeps an install whose root scripts fail.
"""
from __future__ import annotations

import sys

TYPE_CHECKING = False  # mypy reads this as True; typing costs milliseconds to import
if TYPE_CHECKING:
    from typing import Any, TextIO

    from sbox_shim.plan import Step

MODULES = {"npm": "sbox_shim.ecosystems.npm_run", "pip": "sbox_shim.ecosystems.pip_run",
           "yarn": "sbox_shim.ecosystems.yarn"}


class Hooks:
    def __init__(self, err: TextIO) -> None:
        self.err = err
        self.states: dict[str, Any] = {}

    def before(self, step: Step) -> tuple[Step | None, str]:
        """The step to run (None: skip it) and why it is skipped."""
        if not step.hook:
            self.done()
            return step, ""
        name = step.hook[0]
        state, chosen, why = _module(name).before(self.states.get(name), step, self.err)
        self.states[name] = state
        return chosen, why

    def likely(self, step: Step) -> bool:
        """Will `step` probably run (a guess: its container may be started early, never more)?"""
        guess = getattr(_module(step.hook[0]), "likely", None) if step.hook else None
        return bool(guess and guess(step))

    def failed(self) -> None:
        states, self.states = self.states, {}
        for name, state in states.items():
            _module(name).failed(state, self.err)

    def done(self) -> None:
        states, self.states = self.states, {}
        for name, state in states.items():
            _module(name).done(state)


def _module(name: str) -> Any:
    __import__(MODULES[name])
    return sys.modules[MODULES[name]]
