"""Which chapter notebooks a test session selected (the fixtures that run notebooks side by side run
only those)."""


def selected_params(session, test_name: str, **match) -> list:
    """The ``path`` parameters of the collected (selected) items of ``test_name`` whose other
    parameters equal ``match``, in collection order: a fixture that runs notebooks side by side runs
    only those the session will check (``-k`` keeps working)."""
    out = []
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if getattr(item, "originalname", None) == test_name and all(params.get(k) == v for k, v in match.items()):
            out.append(params["path"])
    return out
