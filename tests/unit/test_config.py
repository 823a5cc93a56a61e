"""The strict YAML -> dataclass loader: typos and wrong types are errors that name the file and key."""
import dataclasses
import os
from typing import List, Optional

import pytest

from op3_walk import CONFIG_DIR, PACKAGE_ROOT
from op3_walk.config import ConfigError, describe, doc, from_dict, load, to_dict


@dataclasses.dataclass
class Inner:
    gain: float = doc("a gain", 1.0)


@dataclasses.dataclass
class Outer:
    name: str = doc("required name")
    count: int = doc("a count", 3)
    flag: bool = doc("a flag", False)
    sizes: List[int] = doc("sizes", default_factory=lambda: [1, 2])
    inner: Inner = doc("nested", default_factory=Inner)
    note: Optional[str] = doc("optional", None)

    def validate(self):
        if self.count < 0:
            raise ValueError("count must be >= 0")


def test_valid_mapping_builds_typed_dataclass():
    cfg = from_dict(Outer, {"name": "x", "count": 2, "sizes": [4], "inner": {"gain": 2}})
    assert cfg == Outer(name="x", count=2, sizes=[4], inner=Inner(gain=2.0))
    assert isinstance(cfg.inner.gain, float)
    assert to_dict(cfg)["inner"] == {"gain": 2.0}


@pytest.mark.parametrize("data, fragment", [
    ({"name": "x", "cuont": 1}, "unknown key(s) cuont"),
    ({"name": "x", "inner": {"gian": 1}}, "Outer.inner: unknown key(s) gian"),
    ({}, "missing required key 'name'"),
    ({"name": "x", "count": "3"}, "Outer.count: expected an integer"),
    ({"name": "x", "count": 2.5}, "expected an integer"),
    ({"name": "x", "flag": "yes"}, "expected true/false"),
    ({"name": "x", "count": True}, "expected an integer"),
    ({"name": "x", "sizes": 3}, "expected a list"),
    ({"name": "x", "inner": {"gain": float("nan")}}, "finite"),
    ({"name": "x", "count": -1}, "count must be >= 0"),
])
def test_bad_mappings_are_rejected_with_the_key_named(data, fragment):
    with pytest.raises(ConfigError) as err:
        from_dict(Outer, data)
    assert fragment in str(err.value)


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load(Outer, str(bad))
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load(Outer, str(listy))
    with pytest.raises(ConfigError, match="not found"):
        load(Outer, "no/such/file.yaml")


def test_overrides_are_validated_like_the_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("name: a\ncount: 1\n")
    assert load(Outer, str(good), overrides={"count": 5}).count == 5
    with pytest.raises(ConfigError, match="unknown key"):
        load(Outer, str(good), overrides={"bogus": 1})


def test_describe_lists_every_field_with_its_doc():
    text = describe(Outer)
    for f in dataclasses.fields(Outer):
        assert f.name in text
    assert "a gain" in text


def test_every_shipped_yaml_key_is_documented_by_a_comment():
    """Each key line of each shipped config file carries a comment (on the line or just above it)."""
    for folder, _, files in os.walk(CONFIG_DIR):
        for name in files:
            if not name.endswith(".yaml"):
                continue
            path = os.path.join(folder, name)
            lines = open(path).read().splitlines()
            for i, line in enumerate(lines):
                stripped = line.strip()
                if not stripped or stripped.startswith("#") or stripped.startswith("- ") or ":" not in stripped:
                    continue
                above = lines[i - 1].strip() if i else ""
                assert "#" in line or above.startswith("#"), "%s:%d undocumented key: %s" % (
                    os.path.relpath(path, PACKAGE_ROOT), i + 1, stripped)
