"""npm's run-time hook (see hooks.py): before the download phase, keep the install state so a
failed install is rolled back (rollback.py); after it, pick the install scripts the offline
phase runs (npm_scope.py), or skip that phase.

`step.hook` is ("npm", kind, package directory): kind `ci` (the tree is replaced whole),
`install` (a bare install: the project's own install scripts are due) or `named`
(`npm install <pkg>`: they are not).
"""
from __future__ import annotations

from sbox_shim import rollback
from sbox_shim.ecosystems import npm_scope
from sbox_shim.text import printable

TYPE_CHECKING = False  # mypy reads this as True; typing costs milliseconds to import
if TYPE_CHECKING:
    from typing import TextIO

    from sbox_shim.plan import Step

FILES = ("package.json", "package-lock.json", "npm-shrinkwrap.json")
NOTHING = "nothing this install added or changed has install scripts"


class State:
    def __init__(self, kept: rollback.Kept | None, before: npm_scope.Entries | None, directory: str = "") -> None:
        self.kept = kept
        self.before = before
        self.directory = directory
        self.built = False  # the scripts phase ran


def before(state: State | None, step: Step, err: TextIO) -> tuple[State | None, Step | None, str]:
    _, kind, directory = step.hook
    if step.label == "download":
        known = None if kind == "ci" else npm_scope.read_state(directory)
        # A bare install of a settled tree changes nothing there: no copy of node_modules to make.
        tree = kind != "install" or not npm_scope.settled(directory, known)
        try:
            kept = rollback.keep(directory, FILES, whole=kind == "ci", tree=tree)
        except OSError as exc:
            err.write(printable(f"sbox: cannot keep the state before the install ({exc.filename}: {exc.strerror}); "
                                "a failed install will not be rolled back") + "\n")
            kept = None
        return State(kept, known, directory), step, ""
    if state is None:  # no download phase ran in this run (cannot happen in a built-in plan): all scripts
        return state, step, ""
    root = kind != "named" and npm_scope.root_due(directory)
    argv = npm_scope.scripts_argv(step.argv, directory, state.before, npm_scope.read_after(directory), root)
    if argv is None:
        return state, None, NOTHING
    state.built = True
    return state, step.replace(argv=argv), ""


def likely(step: Step) -> bool:
    """Will the scripts phase probably run: the project's own scripts due, or a lockfile package
    with install scripts or a link, unless a bare install finds its tree settled (it changes
    nothing)? A guess only: the phase's sandbox is started early (docker's container, bwrap's
    driver), which costs CPU the download could use when the phase is then skipped."""
    if step.label == "download":
        return True
    _, kind, directory = step.hook
    if kind != "named" and npm_scope.root_due(directory):
        return True
    if kind == "install" and npm_scope.settled(directory, npm_scope.read_state(directory)):
        return False
    return npm_scope.any_scripts(directory)


def failed(state: State | None, err: TextIO) -> None:
    if state is None or state.kept is None:
        return
    done, problem = rollback.restore(state.kept)
    if problem is None and state.kept.modules == "left":
        changed = npm_scope.read_state(state.kept.directory) != state.before
        what = f"rolled back {', '.join(done)}" if done else "package.json and the lockfile are as before"
        err.write(f"sbox: the install failed; {what}; node_modules was not kept (its lockfiles said nothing "
                  f"would change){': it changed, run npm ci to restore it' if changed else ' and is as before'}\n")
    elif problem is None:
        err.write(f"sbox: the install failed; rolled back {', '.join(done)} to their state before it\n")
    else:
        kept = state.kept
        where = kept.found if kept.refused else kept.keep  # refused: something else moved or replaced it
        tail = (f"the state before it is kept in {where}: move its contents back into {kept.directory}" if where
                else f"the state before it was kept in {kept.keep}, and sbox did not find where it went")
        err.write(printable(f"sbox: the install failed and could not be rolled back ({problem}); {tail}") + "\n")


def done(state: State | None) -> None:
    if state is not None and state.built:
        npm_scope.touch(state.directory)
    if state is not None and state.kept is not None:
        rollback.discard(state.kept)
