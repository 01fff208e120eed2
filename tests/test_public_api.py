import keel


def test_all_is_sorted_and_complete() -> None:
    assert keel.__all__ == sorted(keel.__all__)
    public = {name for name in dir(keel) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(keel, name)).__name__ == "module"}
    assert set(keel.__all__) == public - modules
