"""
The public surface of the ``actors`` package.
"""

import actors


def test_public_names_are_exactly_the_documented_ones() -> None:
    """actors.__all__ lists the public API and nothing else."""
    assert sorted(actors.__all__) == [
        "Actor",
        "ActorDied",
        "ActorError",
        "ActorStats",
        "ActorStopped",
        "AskTimeout",
        "ChildSpec",
        "DuplicateName",
        "EscalationError",
        "Faults",
        "HandlerFailed",
        "InjectedCrash",
        "InvalidSpec",
        "InvariantBroken",
        "Later",
        "LifecycleEvent",
        "NoSuchActor",
        "NotStreaming",
        "PoisonMessage",
        "Ref",
        "StartFailed",
        "StreamReader",
        "Subscription",
        "SupervisorRef",
        "SupervisorSpec",
        "System",
        "open_system",
    ]


def test_every_public_name_is_importable() -> None:
    """Each name in __all__ is an attribute of the package."""
    for name in actors.__all__:
        assert getattr(actors, name) is not None


def test_errors_form_one_hierarchy() -> None:
    """Every runtime error derives from ActorError, and stdlib bases are kept."""
    for name in actors.__all__:
        obj = getattr(actors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, actors.ActorError)
    assert issubclass(actors.AskTimeout, TimeoutError)
    assert issubclass(actors.ActorStopped, actors.ActorDied)
    assert issubclass(actors.NoSuchActor, LookupError)
    assert issubclass(actors.InvalidSpec, ValueError)
    assert issubclass(actors.InjectedCrash, actors.InvariantBroken)


def test_actors_never_imports_rhetor() -> None:
    """The runtime is generic: no module of actors imports rhetor."""
    import pathlib

    root = pathlib.Path(actors.__file__).parent
    for path in root.glob("*.py"):
        assert "rhetor" not in path.read_text(), path
