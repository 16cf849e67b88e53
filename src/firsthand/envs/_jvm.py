"""Starting and stopping the Java VMs that ScienceWorld and TextWorld-Express run their simulators in.

Both packages ship a jar driven through py4j. The JVM is started with py4j's ``die_on_exit`` (it quits
when its standard input closes), so a Python process that dies cannot leave it running.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway

from firsthand.contract import DependencyNotInstalled

INSTALL_JAVA = "install a Java runtime (11 or newer), e.g. `apt-get install default-jre-headless`, with `java` on PATH"


def start_gateway(jar: str, cwd: str, options: Sequence[str], needed_by: str) -> JavaGateway:
    """A py4j gateway to a new JVM running `jar` with the JVM `options`; `needed_by` names the environment."""
    try:
        port, proc = launch_gateway(classpath=jar, die_on_exit=True, cwd=cwd, javaopts=list(options), return_proc=True)
    except OSError as e:
        message = f"{needed_by} runs in a Java VM and starting `java` failed ({e}); {INSTALL_JAVA}"
        raise DependencyNotInstalled(message) from e
    return JavaGateway(gateway_parameters=GatewayParameters(port=port, auto_field=True), java_process=proc)


def stop_gateway(gateway: JavaGateway, timeout: float = 10.0) -> None:
    """Close the gateway and make sure its JVM is gone (killed if it does not quit within `timeout` s)."""
    proc = gateway.java_process
    try:
        gateway.shutdown()
    except Exception:  # noqa: BLE001 - the JVM may already be gone; the process is handled below
        pass
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.stdin.close()  # die_on_exit: the JVM quits when its standard input closes
        proc.wait(timeout=timeout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()
