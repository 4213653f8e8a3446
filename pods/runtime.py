"""A Plan (pods/plan.py) run under podman: the network, the volumes given to the pods' fsGroup,
the Secrets' files, the pods and the Services' forwarders; the probes run as the kubelet would run
them; a CronJob's pod run to its end; a pod stopped as the kubelet stops it.

    runtime = Runtime(state_dir)          # where the Secrets' files are written
    runtime.start(plan, plan.pod("fintech-redis-0"))
    runtime.wait_ready(pod)               # -> the seconds each probe took to pass
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pods.plan import Container, Plan, Pod, Probe

FORWARDER = Path(__file__).with_name("forward.py")
HTTP_PROBE = ("import sys, urllib.request\n"
              "try:\n"
              "    status = urllib.request.urlopen('http://127.0.0.1:%s%s', timeout=%s).status\n"
              "except Exception as e:\n"
              "    sys.exit(str(e))\n"
              "sys.exit(0 if 200 <= status < 400 else status)\n")
TCP_PROBE = "import socket; socket.create_connection(('127.0.0.1', %s), timeout=%s).close()"


class PodmanError(RuntimeError):
    pass


@dataclass
class ProbeResult:
    container: str
    probe: Probe
    seconds: float  # from the container's start (startup) or from the startup probe's pass
    passed: bool
    detail: str = ""


class Runtime:
    def __init__(self, state_dir: Path, base_image: str = "localhost/fintech-base:bookworm", log=print):
        self.state_dir = state_dir
        self.base_image = base_image
        self.log = log
        self.started: dict[str, float] = {}  # container -> when it started (monotonic)

    # --- podman ----------------------------------------------------------------------------------
    def podman(self, *args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise PodmanError(f"podman {' '.join(args[:3])} ...: {result.stderr.strip() or result.stdout.strip()}")
        return result

    def exists(self, what: str, name: str) -> bool:
        return self.podman(what, "exists", name, check=False).returncode == 0

    # --- what the pods share -------------------------------------------------------------------
    def prepare(self, plan: Plan) -> None:
        """The network, and each pod's volumes given to its fsGroup as the kubelet does."""
        if not self.exists("network", plan.network):
            self.podman("network", "create", plan.network)
        for pod in plan.pods + list(plan.jobs.values()):
            for volume, group in pod.volumes.items():
                if not self.exists("volume", volume):
                    self.podman("volume", "create", volume)
                if group is not None:
                    mountpoint = Path(self.podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip())
                    os.chown(mountpoint, 0, group)
                    mountpoint.chmod(0o2775)

    def write_secrets(self, pod: Pod, secrets: dict[str, dict[str, str]]) -> None:
        for folder, (secret, items, mode, group) in pod.secret_dirs.items():
            target = self.state_dir / "secrets" / folder
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for key, path in items.items():
                file = target / path
                file.write_text(secrets[secret][key])
                os.chown(file, 0, group if group is not None else 0)
                file.chmod(mode)

    # --- pods ----------------------------------------------------------------------------------
    def start(self, plan: Plan, pod: Pod, secrets: dict[str, dict[str, str]],
              publish: dict[int, int] | None = None, detach: bool = True) -> None:
        """Create the pod on the plan's network, under its own name, and start its containers.
        `publish`: container port -> a port on 127.0.0.1 of this machine."""
        self.remove(pod)
        self.write_secrets(pod, secrets)
        ports = [f"--publish=127.0.0.1:{host}:{port}" for port, host in (publish or {}).items()]
        self.podman("pod", "create", "--name", pod.name, "--network", plan.network, "--network-alias", pod.name,
                    "--hostname", pod.name, *ports)
        for container in pod.containers:
            args = [a.replace("source=SECRETS/", f"source={self.state_dir / 'secrets'}/") for a in container.run_args(pod.name)]
            self.podman("run", "--detach" if detach else "--rm", *args)
            self.started[container_name(pod, container)] = time.monotonic()
        self.log(f"pod {pod.name}: started ({', '.join(c.image for c in pod.containers)})")

    def run_to_end(self, plan: Plan, pod: Pod, secrets: dict[str, dict[str, str]], timeout_s: float) -> tuple[int, str]:
        """Start a job's pod and wait for its container to exit: (exit code, its log)."""
        self.start(plan, pod, secrets)
        [container] = pod.containers
        name = container_name(pod, container)
        result = self.podman("wait", name, timeout=timeout_s)
        code = int(result.stdout.strip().splitlines()[-1])
        logs = self.logs(name)
        self.log(f"job {pod.name}: exit {code} in {time.monotonic() - self.started[name]:.1f} s")
        return code, logs

    def logs(self, container: str) -> str:
        result = self.podman("logs", container, check=False)
        return result.stdout + result.stderr

    def remove(self, pod: Pod) -> None:
        if self.exists("pod", pod.name):
            self.podman("pod", "rm", "--force", pod.name)

    def stop(self, pod: Pod) -> float:
        """As the kubelet: each container's preStop sleep, then SIGTERM, then SIGKILL at the end of the
        grace period. Returns the seconds from the start of the stop to the last container's exit."""
        begin = time.monotonic()
        for container in pod.containers:
            time.sleep(container.pre_stop_sleep_s)
        remaining = max(1, int(pod.grace_period_s - (time.monotonic() - begin)))
        for container in pod.containers:
            self.podman("stop", "--time", str(remaining), container_name(pod, container), timeout=remaining + 30)
        return time.monotonic() - begin

    def exit_code(self, pod: Pod, container: Container) -> int:
        state = json.loads(self.podman("inspect", container_name(pod, container)).stdout)[0]["State"]
        return state["ExitCode"]

    # --- Services --------------------------------------------------------------------------------
    def start_services(self, plan: Plan) -> None:
        for service in plan.services:
            if self.exists("container", service.name):
                self.podman("rm", "--force", service.name)
            if not service.pods:
                self.log(f"service {service.name}: no pod selected, not started")
                continue
            specs = [f"{port}={','.join(f'{pod}:{target}' for pod in service.pods)}" for port, target in service.ports]
            self.podman("run", "--detach", "--name", service.name, "--network", plan.network, "--network-alias",
                        service.name, "--mount", f"type=bind,source={FORWARDER},destination=/forward.py,ro=true",
                        self.base_image, "python3", "/forward.py", *specs)
            self.log(f"service {service.name}: {' '.join(specs)}")

    # --- probes ----------------------------------------------------------------------------------
    def probe_once(self, pod: Pod, container: Container, probe: Probe) -> tuple[bool, str]:
        kind, *rest = probe.action
        if kind == "http":
            command = ["python3", "-c", HTTP_PROBE % (rest[0], rest[1], probe.timeout_s)]
        elif kind == "tcp":
            command = ["python3", "-c", TCP_PROBE % (rest[0], probe.timeout_s)]
        else:
            command = rest
        try:
            result = self.podman("exec", container_name(pod, container), *command, check=False,
                                 timeout=probe.timeout_s + 15)
        except subprocess.TimeoutExpired:
            return False, "timed out"
        return result.returncode == 0, (result.stdout + result.stderr).strip()[-300:]

    def wait_probe(self, pod: Pod, container: Container, probe: Probe, since: float) -> ProbeResult:
        """Run the probe every period from `since` (+ its initial delay) until it passes or the
        kubelet would give up (initial delay + period x failure threshold)."""
        name = container_name(pod, container)
        time.sleep(max(0.0, since + probe.initial_delay_s - time.monotonic()))
        detail = ""
        while True:
            attempt = time.monotonic()
            if self.podman("container", "inspect", "--format", "{{.State.Running}}", name).stdout.strip() != "true":
                return ProbeResult(name, probe, attempt - since, False, "container exited:\n" + self.logs(name)[-3000:])
            passed, detail = self.probe_once(pod, container, probe)
            if passed:
                return ProbeResult(name, probe, time.monotonic() - since, True)
            if attempt + probe.period_s - since > probe.deadline_s:
                return ProbeResult(name, probe, time.monotonic() - since, False, detail)
            time.sleep(max(0.0, attempt + probe.period_s - time.monotonic()))

    def wait_ready(self, pod: Pod) -> list[ProbeResult]:
        """Each container's startup probe from its start, then its readiness and liveness probes."""
        results = []
        for container in pod.containers:
            since = self.started[container_name(pod, container)]
            by_kind = {p.kind: p for p in container.probes}
            if "startup" in by_kind:
                result = self.wait_probe(pod, container, by_kind["startup"], since)
                results.append(result)
                if not result.passed:
                    continue
                since = time.monotonic()
            for kind in ("readiness", "liveness"):
                if kind in by_kind:
                    results.append(self.wait_probe(pod, container, by_kind[kind], since))
        return results

    # --- inside a container ----------------------------------------------------------------------
    def exec(self, pod: Pod, container: Container, *command: str) -> subprocess.CompletedProcess:
        return self.podman("exec", container_name(pod, container), *command, check=False, timeout=60)

    def down(self, plan: Plan, volumes: bool = True) -> None:
        for service in plan.services:
            self.podman("rm", "--force", "--time", "2", service.name, check=False)
        for pod in plan.pods + list(plan.jobs.values()):
            self.podman("pod", "rm", "--force", pod.name, check=False)
        if volumes:
            for volume in {v for pod in plan.pods + list(plan.jobs.values()) for v in pod.volumes}:
                self.podman("volume", "rm", "--force", volume, check=False)
        self.podman("network", "rm", "--force", plan.network, check=False)
        shutil.rmtree(self.state_dir / "secrets", ignore_errors=True)


def container_name(pod: Pod, container: Container) -> str:
    return f"{pod.name}-{container.name}"
