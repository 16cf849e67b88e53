"""The JVM helper shared by the Java-based environments (ScienceWorld, TextWorld-Express)."""

import pytest

pytest.importorskip("py4j")

from firsthand.contract import DependencyNotInstalled  # noqa: E402
from firsthand.envs._jvm import start_gateway  # noqa: E402


def test_missing_java_names_the_environment_and_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no `java` anywhere
    with pytest.raises(DependencyNotInstalled) as error:
        start_gateway("no.jar", str(tmp_path), [], "textworld-express")
    message = str(error.value)
    assert message.startswith("textworld-express runs in a Java VM")
    assert "apt-get install default-jre-headless" in message
