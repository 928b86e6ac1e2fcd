"""The simulated scheduler and kubelet: what happens to a pod after the apiserver stores it.

There is no container runtime. A test decides what each created pod does by giving a
*behaviour* (default `Runs()`):

- `Runs()`: bound to a node, `ContainerCreating`, then `Running` (podIP, hostIP, startTime,
  `containerStatuses[].state.running`), each step a MODIFIED event; the containers run
  until a hook ends them (`exit_container`) or the pod is deleted. Logs are what the test
  writes (`write_log`).
- `Exits(code, reason)`: as `Runs`, then the containers exit with that code.
- `RunsCommand()`: each container's `command` + `args` (with `$(VAR)` expansion) runs as a
  local process with the container's env in a per-pod scratch directory; its stdout and
  stderr are the container log, its exit code the container's. Images are ignored.
- `StaysPending(reason)`: `Unschedulable` (never bound), or a waiting reason such as
  `ImagePullBackOff` / `ContainerCreating` (bound, containers never start).

A pod whose `spec.nodeName` names no node the stand-in declares stays Pending (no kubelet
would pick it up), and a graceful delete leaves it terminating until a delete with grace
0. An exited container is restarted according to `restartPolicy` (via a short
`CrashLoopBackOff`); with `Never` (or `OnFailure` and exit 0) the pod goes
`Succeeded` / `Failed`. Deletion with grace: containers get SIGTERM (simulated ones stop at
once with exit code 0 unless `ignore_sigterm`), are killed after the grace period, then
the pod is removed (DELETED).

Pod IPs come from 127.244.0.0/16: loopback, so nothing ever sends traffic to a private
range. This module owns pod status; it knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import re
import secrets
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.kubeapi.defaulting import quantity_value
from tests.kubeapi.logs import ContainerLog
from tests.kubeapi.store import JsonObject, ObjectStore

# behaviours ---------------------------------------------------------------------


@dataclass(frozen=True)
class Runs:
    """Start and keep running until a hook ends the containers or the pod is deleted."""

    ignore_sigterm: bool = False
    """Keep running through SIGTERM, so deletion waits out the whole grace period."""


@dataclass(frozen=True)
class Exits:
    """Start, write `logs`, then every container exits with `exit_code`."""

    exit_code: int = 0
    reason: str | None = None
    message: str | None = None
    logs: str = ""


@dataclass(frozen=True)
class RunsCommand:
    """Run each container's command and args as a local process (images are ignored)."""

    ignore_sigterm: bool = False


@dataclass(frozen=True)
class StaysPending:
    """Never start: `Unschedulable` (not bound) or a container waiting reason."""

    reason: str = "Unschedulable"
    message: str = ""


Behaviour = Runs | Exits | RunsCommand | StaysPending


def now_rfc3339() -> str:
    """The apiserver's timestamp form (seconds, Z)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# runtime state ------------------------------------------------------------------


@dataclass
class ContainerRuntime:
    """One container of a simulated pod: its log, previous instance's log, process."""

    name: str
    log: ContainerLog = field(default_factory=ContainerLog)
    previous_log: ContainerLog | None = None
    process: asyncio.subprocess.Process | None = None
    restart_count: int = 0
    running: bool = False


@dataclass
class PodRuntime:
    """What the simulated kubelet keeps for one pod (keyed by namespace, name and uid)."""

    namespace: str
    name: str
    uid: str
    behaviour: Behaviour
    scratch: Path
    pod_ip: str
    containers: dict[str, ContainerRuntime]
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    deleting: bool = False

    def spawn(self, coro: Any) -> None:
        """Run `coro` as a task owned by this pod (cancelled when the pod goes away)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined names replaced, `$$` escapes a `$`."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(repl, text)


class ContainerConfigError(Exception):
    """The container's env references something the stand-in does not have."""


def _field_ref(pod: JsonObject, path: str) -> str:
    meta = pod.get("metadata", {})
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str(meta.get(m.group(1), {}).get(m.group(2), ""))
    table: dict[str, Any] = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": pod.get("spec", {}).get("nodeName"),
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName"),
        "status.hostIP": pod.get("status", {}).get("hostIP"),
        "status.podIP": pod.get("status", {}).get("podIP"),
    }
    return str(table.get(path) or "")


def _resource_ref(container: JsonObject, ref: JsonObject, node: JsonObject) -> str:
    kind, _, name = ref.get("resource", "").partition(".")
    res = container.get("resources", {})
    raw = res.get(kind, {}).get(name)
    if raw is None:
        raw = node.get("status", {}).get("allocatable", {}).get(name, "0")
    divisor = quantity_value(ref.get("divisor", "1"))
    return str(math.ceil(quantity_value(raw) / divisor))


def container_env(pod: JsonObject, container: JsonObject, node: JsonObject) -> dict[str, str]:
    """The environment a process in `container` gets (raises ContainerConfigError)."""
    env: dict[str, str] = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOSTNAME": pod["metadata"]["name"],
    }
    for entry in container.get("envFrom") or []:
        source = entry.get("configMapRef") or entry.get("secretRef") or {}
        if not source.get("optional"):
            what = "configmap" if "configMapRef" in entry else "secret"
            raise ContainerConfigError(f'{what} "{source.get("name")}" not found')
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value") or "", env)
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            env[name] = _field_ref(pod, source["fieldRef"].get("fieldPath", ""))
        elif "resourceFieldRef" in source:
            env[name] = _resource_ref(container, source["resourceFieldRef"], node)
        else:
            ref = source.get("configMapKeyRef") or source.get("secretKeyRef") or {}
            if not ref.get("optional"):
                what = "configmap" if "configMapKeyRef" in source else "secret"
                raise ContainerConfigError(f'{what} "{ref.get("name")}" not found')
    return env


# the kubelet --------------------------------------------------------------------


class Kubelet:
    """Scheduler and kubelet for every node the stand-in declares."""

    def __init__(
        self,
        store: ObjectStore,
        nodes: Callable[[], dict[str, JsonObject]],
        default_node: str,
        root: Path,
        startup_delay: float,
        restart_backoff: float,
    ) -> None:
        self.store = store
        self.nodes = nodes
        self.default_node = default_node
        self.root = root
        self.startup_delay = startup_delay
        self.restart_backoff = restart_backoff
        self.pods: dict[tuple[str, str], PodRuntime] = {}
        self._ips = itertools.count(2)

    # helpers --------------------------------------------------------------------

    def runtime(self, namespace: str, name: str) -> PodRuntime | None:
        """The runtime of a live pod, or None."""
        return self.pods.get((namespace, name))

    def _pod(self, rt: PodRuntime) -> JsonObject | None:
        pod = self.store.get("pods", rt.namespace, rt.name)
        if pod is None or pod["metadata"].get("uid") != rt.uid:
            return None
        return pod

    def _update(self, rt: PodRuntime, mutate: Callable[[JsonObject], None]) -> JsonObject | None:
        pod = self._pod(rt)
        if pod is None:
            return None
        mutate(pod)
        return self.store.update("pods", pod)

    def _node_ip(self, node_name: str) -> str:
        node = self.nodes().get(node_name, {})
        for address in node.get("status", {}).get("addresses", []):
            if address.get("type") == "InternalIP":
                return str(address["address"])
        return "127.0.0.1"

    @staticmethod
    def _conditions(pod: JsonObject, ready: bool, initialized: bool = True) -> list[JsonObject]:
        stamp = now_rfc3339()
        flag = "True" if ready else "False"
        not_ready = None if ready else "ContainersNotReady"
        out = []
        for ctype, status, reason in (
            ("PodReadyToStartContainers", "True" if initialized else "False", None),
            ("Initialized", "True", None),
            ("Ready", flag, not_ready),
            ("ContainersReady", flag, not_ready),
            ("PodScheduled", "True", None),
        ):
            cond: JsonObject = {"type": ctype, "status": status, "lastTransitionTime": stamp}
            if reason:
                cond["reason"] = reason
                names = [c["name"] for c in pod["spec"]["containers"]]
                cond["message"] = f"containers with unready status: [{' '.join(names)}]"
            out.append(cond)
        return out

    @staticmethod
    def _container_status(c: JsonObject, state: JsonObject, rt: ContainerRuntime) -> JsonObject:
        running = "running" in state
        status: JsonObject = {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "ready": running,
            "started": running,
            "restartCount": rt.restart_count,
            "state": state,
            "lastState": {},
        }
        if "waiting" not in state or rt.restart_count:
            status["containerID"] = "containerd://" + secrets.token_hex(32)
            status["imageID"] = f"{c.get('image', '')}@sha256:" + "0" * 64
        return status

    # lifecycle ------------------------------------------------------------------

    def admit(self, pod: JsonObject, behaviour: Behaviour) -> None:
        """Take charge of a just-created pod: schedule it and start its containers."""
        meta = pod["metadata"]
        ip = next(self._ips)
        rt = PodRuntime(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            behaviour=behaviour,
            scratch=self.root / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}",
            pod_ip=f"127.244.{ip // 254 % 256}.{ip % 254 + 1}",
            containers={c["name"]: ContainerRuntime(c["name"]) for c in pod["spec"]["containers"]},
        )
        self.pods[(rt.namespace, rt.name)] = rt
        rt.spawn(self._start(rt))

    async def _start(self, rt: PodRuntime) -> None:
        await asyncio.sleep(self.startup_delay)
        pod = self._pod(rt)
        if pod is None or rt.deleting:
            return
        behaviour = rt.behaviour
        if isinstance(behaviour, StaysPending) and behaviour.reason == "Unschedulable":
            self._update(rt, lambda p: self._unschedulable(p, behaviour))
            return
        node_name = pod["spec"].get("nodeName")
        if not node_name:
            node_name = self.default_node
            self._update(rt, lambda p: self._bind(p, self.default_node))
        if node_name not in self.nodes():
            return  # no kubelet on that node: Pending for ever, as on a cluster
        host_ip = self._node_ip(node_name)
        self._update(rt, lambda p: self._creating(p, rt, host_ip))
        await asyncio.sleep(self.startup_delay)
        if isinstance(behaviour, StaysPending) or rt.deleting:
            if isinstance(behaviour, StaysPending):
                self._update(
                    rt, lambda p: self._waiting_all(p, rt, behaviour.reason, behaviour.message)
                )
            return
        await asyncio.to_thread(rt.scratch.mkdir, parents=True, exist_ok=True)
        for name in rt.containers:
            await self._run_container(rt, name)
        if isinstance(behaviour, Exits):
            for name, crt in rt.containers.items():
                if behaviour.logs:
                    crt.log.write(behaviour.logs.encode())
                self.exit_container(
                    rt.namespace,
                    rt.name,
                    name,
                    behaviour.exit_code,
                    behaviour.reason,
                    behaviour.message,
                )

    def _unschedulable(self, pod: JsonObject, behaviour: StaysPending) -> None:
        pod["status"]["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": behaviour.message
                or "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are "
                "available: 1 No preemption victims found for incoming pod.",
                "lastTransitionTime": now_rfc3339(),
            }
        ]

    @staticmethod
    def _bind(pod: JsonObject, node: str) -> None:
        pod["spec"]["nodeName"] = node
        pod["status"]["conditions"] = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()}
        ]

    def _creating(self, pod: JsonObject, rt: PodRuntime, host_ip: str) -> None:
        status = pod["status"]
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
        status["startTime"] = now_rfc3339()
        status["conditions"] = self._conditions(pod, ready=False, initialized=False)
        status["containerStatuses"] = [
            self._container_status(
                c, {"waiting": {"reason": "ContainerCreating"}}, rt.containers[c["name"]]
            )
            for c in pod["spec"]["containers"]
        ]

    def _waiting_all(self, pod: JsonObject, rt: PodRuntime, reason: str, message: str) -> None:
        waiting: JsonObject = {"reason": reason}
        for c, status in zip(
            pod["spec"]["containers"], pod["status"]["containerStatuses"], strict=True
        ):
            if reason in ("ImagePullBackOff", "ErrImagePull"):
                waiting["message"] = message or f'Back-off pulling image "{c.get("image", "")}"'
            elif message:
                waiting["message"] = message
            status.update(
                self._container_status(c, {"waiting": dict(waiting)}, rt.containers[c["name"]])
            )

    def _set_container(
        self, rt: PodRuntime, name: str, state: JsonObject, last: JsonObject | None = None
    ) -> None:
        def mutate(pod: JsonObject) -> None:
            spec_c = next(c for c in pod["spec"]["containers"] if c["name"] == name)
            statuses = pod["status"].setdefault("containerStatuses", [])
            status = next((s for s in statuses if s["name"] == name), None)
            fresh = self._container_status(spec_c, state, rt.containers[name])
            if status is None:
                statuses.append(fresh)
                status = fresh
            else:
                keep_id = status.get("containerID") if "terminated" in state else None
                fresh["lastState"] = status.get("lastState", {})
                status.update(fresh)
                if keep_id:
                    status["containerID"] = keep_id
            if last is not None:
                status["lastState"] = last
            self._recompute(pod, rt)

        self._update(rt, mutate)

    def _recompute(self, pod: JsonObject, rt: PodRuntime) -> None:
        statuses = pod["status"].get("containerStatuses", [])
        all_running = bool(statuses) and all("running" in s["state"] for s in statuses)
        all_done = bool(statuses) and all("terminated" in s["state"] for s in statuses)
        if all_done:
            failed = any(s["state"]["terminated"]["exitCode"] != 0 for s in statuses)
            pod["status"]["phase"] = "Failed" if failed else "Succeeded"
        elif any("running" in s["state"] or s.get("restartCount") for s in statuses):
            pod["status"]["phase"] = "Running"
        pod["status"]["podIP"] = rt.pod_ip
        pod["status"]["podIPs"] = [{"ip": rt.pod_ip}]
        pod["status"]["conditions"] = self._conditions(pod, ready=all_running)

    async def _run_container(self, rt: PodRuntime, name: str) -> None:
        crt = rt.containers[name]
        pod = self._pod(rt)
        if pod is None:
            return
        spec_c = next(c for c in pod["spec"]["containers"] if c["name"] == name)
        node = self.nodes().get(pod["spec"].get("nodeName", ""), {})
        try:
            # Resolved for every behaviour: a reference to a configmap or secret (which
            # the stand-in never has) keeps the container from starting, as on a node.
            env = container_env(pod, spec_c, node)
        except ContainerConfigError as exc:
            self._set_container(
                rt,
                name,
                {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}},
            )
            return
        if isinstance(rt.behaviour, RunsCommand):
            argv = [
                expand(a, env) for a in (spec_c.get("command") or []) + (spec_c.get("args") or [])
            ]
            try:
                if not argv:
                    raise FileNotFoundError(
                        "the stand-in runs a container's command locally "
                        "and this container has no command"
                    )
                crt.process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env=env,
                    cwd=rt.scratch,
                    start_new_session=True,
                )
            except OSError as exc:
                crt.running = False
                self._set_container(
                    rt,
                    name,
                    self._terminated(
                        128,
                        "StartError",
                        "failed to create containerd task: failed to create shim task: OCI "
                        "runtime create failed: runc create failed: unable to start container "
                        "process: "
                        f"exec: {argv[0] if argv else ''!r}: {exc}: unknown",
                    ),
                )
                self._after_exit(rt, name, 128)
                return
            rt.spawn(self._watch_process(rt, name, crt.process, crt.log))
        crt.running = True
        self._set_container(rt, name, {"running": {"startedAt": now_rfc3339()}})

    async def _watch_process(
        self, rt: PodRuntime, name: str, process: asyncio.subprocess.Process, log: ContainerLog
    ) -> None:
        async def pump(stream: asyncio.StreamReader | None) -> None:
            if stream is None:
                return
            while line := await stream.readline():
                log.write(line)

        await asyncio.gather(pump(process.stdout), pump(process.stderr))
        code = await process.wait()
        exit_code = code if code >= 0 else 128 - code
        if rt.containers[name].process is process:
            rt.containers[name].process = None
            self.exit_container(rt.namespace, rt.name, name, exit_code)

    @staticmethod
    def _terminated(
        code: int, reason: str | None, message: str | None = None, started: str | None = None
    ) -> JsonObject:
        term: JsonObject = {
            "exitCode": code,
            "reason": reason or ("Completed" if code == 0 else "Error"),
            "startedAt": started or now_rfc3339(),
            "finishedAt": now_rfc3339(),
        }
        if message:
            term["message"] = message
        return {"terminated": term}

    def exit_container(
        self,
        namespace: str,
        name: str,
        container: str | None,
        exit_code: int,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        """End one container (or all, `container=None`) with an exit code, as the runtime would."""
        rt = self.runtime(namespace, name)
        if rt is None:
            raise KeyError(f"pod {namespace}/{name} is not running in the stand-in")
        names = [container] if container else list(rt.containers)
        for cname in names:
            crt = rt.containers[cname]
            if crt.process is not None and crt.process.returncode is None:
                process, crt.process = crt.process, None
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            crt.running = False
            pod = self._pod(rt)
            started = None
            if pod is not None:
                for s in pod["status"].get("containerStatuses", []):
                    if s["name"] == cname and "running" in s["state"]:
                        started = s["state"]["running"]["startedAt"]
            self._set_container(rt, cname, self._terminated(exit_code, reason, message, started))
            self._after_exit(rt, cname, exit_code)

    def _after_exit(self, rt: PodRuntime, name: str, exit_code: int) -> None:
        pod = self._pod(rt)
        if pod is None:
            return
        crt = rt.containers[name]
        crt.log.close()
        policy = pod["spec"].get("restartPolicy", "Always")
        restart = not rt.deleting and (
            policy == "Always" or (policy == "OnFailure" and exit_code != 0)
        )
        if not restart:
            return
        status = next(s for s in pod["status"]["containerStatuses"] if s["name"] == name)
        last = {"terminated": status["state"]["terminated"]}
        crt.restart_count += 1
        crt.previous_log, crt.log = crt.log, ContainerLog()
        self._set_container(
            rt,
            name,
            {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off 10s restarting failed container={name} pod={rt.name}_"
                    f"{rt.namespace}({rt.uid})",
                }
            },
            last=last,
        )
        rt.spawn(self._restart(rt, name))

    async def _restart(self, rt: PodRuntime, name: str) -> None:
        await asyncio.sleep(self.restart_backoff)
        if self._pod(rt) is not None and not rt.deleting:
            await self._run_container(rt, name)

    # deletion -------------------------------------------------------------------

    def terminate(self, namespace: str, name: str, grace: int, remove: Callable[[], None]) -> None:
        """Graceful deletion was requested: stop containers, then call `remove`.

        A pod bound to a node the stand-in does not declare has no kubelet to finish the
        deletion: it stays terminating until deleted with grace 0, as on a cluster.
        """
        rt = self.runtime(namespace, name)
        pod = self.store.get("pods", namespace, name)
        if pod is not None and pod["spec"].get("nodeName") not in self.nodes():
            return
        if rt is None:
            remove()
            return
        if rt.deleting:
            return
        rt.deleting = True
        rt.spawn(self._terminate(rt, grace, remove))

    async def _terminate(self, rt: PodRuntime, grace: int, remove: Callable[[], None]) -> None:
        ignore = isinstance(rt.behaviour, (Runs, RunsCommand)) and rt.behaviour.ignore_sigterm
        waits = []
        for crt in rt.containers.values():
            process = crt.process
            if process is not None and process.returncode is None and not ignore:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                waits.append(process.wait())
        if ignore:
            await asyncio.sleep(grace)
        elif waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), timeout=grace)
        else:
            await asyncio.sleep(0)
        for cname, crt in rt.containers.items():
            if crt.running:
                killed = ignore or (crt.process is not None and crt.process.returncode is None)
                self.exit_container(rt.namespace, rt.name, cname, 137 if killed else 0)
        current = asyncio.current_task()
        if current is not None:
            rt.tasks.discard(current)
        remove()

    def forget(self, namespace: str, name: str) -> None:
        """The pod is gone from the store: kill what it ran, end its logs, drop its tasks."""
        rt = self.pods.pop((namespace, name), None)
        if rt is None:
            return
        rt.deleting = True
        for crt in rt.containers.values():
            if crt.process is not None and crt.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(crt.process.pid, signal.SIGKILL)
            crt.log.close()
            if crt.previous_log is not None:
                crt.previous_log.close()
        current = asyncio.current_task()
        for task in list(rt.tasks):
            if task is not current:
                task.cancel()
        shutil.rmtree(rt.scratch, ignore_errors=True)

    async def close(self) -> None:
        """Stop everything (server shutdown or state loss)."""
        for namespace, name in list(self.pods):
            rt = self.pods[(namespace, name)]
            tasks = list(rt.tasks)
            self.forget(namespace, name)
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
