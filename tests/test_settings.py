"""Chapter settings are typed and validated (``utils.settings``): every profile x chapter resolves, at
its full and its smoke budget, and a missing, unknown or ill-typed key is an error that names the
profile, the chapter and the key."""
from dataclasses import dataclass, field

import pytest

from utils import chapters, profiles
from utils.settings import ChapterSettings, SettingsError


@pytest.mark.parametrize("name", profiles.NAMES)
@pytest.mark.parametrize("stem", list(chapters.CHAPTERS))
def test_every_profile_and_chapter_resolves(name, stem):
    S = chapters.module(stem).Settings
    assert set(S.PROFILES) == set(profiles.NAMES), f"{stem}: a block for every profile"
    full = S.for_profile(name)
    assert isinstance(full, S) and full.CHAPTER.startswith("ch")
    cut = S.for_profile(profiles.resolve(name, allow_cpu=True, budget="smoke"))
    assert set(cut.as_dict()) == set(full.as_dict())


def test_all_settings_checks_every_chapter():
    got = chapters.all_settings(profiles.resolve("smoke"))
    assert set(got) == set(chapters.CHAPTERS)


@dataclass(frozen=True)
class Demo(ChapterSettings):
    CHAPTER = "ch99"
    n: int = 3
    sigmas: list[float] = field(default_factory=lambda: [0.5, 1.0])
    name: str = "digits"
    extra: dict | None = None
    reasons: dict[str, str] = field(default_factory=dict)
    PROFILES = {"smoke": dict(n=1), "cpu": {}, "colab": dict(n="many"), "gpu": dict(nn=4)}

    def validate(self):
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")


def test_defaults_overrides_and_canonical_types():
    s = Demo.for_profile("smoke")
    assert s.n == 1 and s.sigmas == [0.5, 1.0] and s.extra is None
    assert Demo.for_profile("cpu").n == 3
    r = s.replace(sigmas=[1, 2])
    assert r.sigmas == [1.0, 2.0] and all(isinstance(v, float) for v in r.sigmas)


def test_errors_name_profile_chapter_and_key():
    with pytest.raises(SettingsError, match=r"profile 'colab', chapter 'ch99'.*key 'n'.*int"):
        Demo.for_profile("colab")
    with pytest.raises(SettingsError, match=r"profile 'gpu', chapter 'ch99'.*unknown key\(s\) \['nn'\]"):
        Demo.for_profile("gpu")
    with pytest.raises(SettingsError, match="n must be >= 1"):
        Demo.for_profile("smoke").replace(n=0)
    with pytest.raises(SettingsError, match=r"key 'reasons'\['a'\] must be a string"):
        Demo.for_profile("smoke").replace(reasons={"a": 3})
    with pytest.raises(SettingsError, match="bool|int"):
        Demo.for_profile("smoke").replace(n=True)


def test_a_missing_block_is_an_error():
    @dataclass(frozen=True)
    class NoGpu(ChapterSettings):
        CHAPTER = "ch98"
        n: int = 1
        PROFILES = {"smoke": {}, "cpu": {}, "colab": {}}

    with pytest.raises(SettingsError, match=r"profile 'gpu', chapter 'ch98'.*no settings block"):
        NoGpu.for_profile("gpu")


def test_a_field_without_default_must_be_given():
    @dataclass(frozen=True)
    class Req(ChapterSettings):
        CHAPTER = "ch97"
        n: int
        PROFILES = {"smoke": dict(n=1), "cpu": {}, "colab": {}, "gpu": {}}

    assert Req.for_profile("smoke").n == 1
    with pytest.raises(SettingsError, match=r"profile 'cpu', chapter 'ch97'.*key 'n': missing"):
        Req.for_profile("cpu")


def test_the_old_profile_chapter_lookup_points_to_the_settings():
    with pytest.raises(AttributeError, match="settings"):
        profiles.resolve("cpu").chapter("ch2")
