"""An Enterprise Gateway process proxy whose pool hosts are read from a file at each launch.

EG's ``DistributedProcessProxy`` takes its hosts from ``EG_REMOTE_HOSTS`` (read
once, when EG starts) or from the kernelspec's ``remote_hosts``. This subclass
reads ``hosts_file`` (one host per line, ``#`` comments) from the kernelspec's
process-proxy config each time a kernel starts or restarts, so hosts are added
and removed without restarting the gateway. Round robin (EG's default) and
least-connection work as in EG. Loaded inside EG's own environment: it needs
only this package on EG's path (``pip install --no-deps jupyter-warden``).
"""

from __future__ import annotations

from pathlib import Path

from enterprise_gateway.services.processproxies.distributed import DistributedProcessProxy


def read_hosts(path: str) -> list[str]:
    hosts = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            hosts.append(line)
    return hosts


class WardenDistributedProcessProxy(DistributedProcessProxy):
    """DistributedProcessProxy over the hosts listed in ``hosts_file`` right now."""

    def __init__(self, kernel_manager, proxy_config: dict):
        super().__init__(kernel_manager, proxy_config)
        self.hosts_file = proxy_config.get("hosts_file")

    def _determine_next_host(self, env_dict: dict) -> str:
        if self.hosts_file:
            try:
                hosts = read_hosts(self.hosts_file)
            except OSError as e:
                self.log_and_raise(http_status_code=503, reason=f"the pool's host list can't be read: {e}")
            if not hosts:
                self.log_and_raise(http_status_code=503, reason=f"the pool has no hosts ({self.hosts_file} is empty)")
            self.hosts = hosts
            if self.least_connection:
                counts = DistributedProcessProxy.kernel_on_host._host_kernels
                for host in hosts:
                    counts.setdefault(host, 0)
                for gone in set(counts) - set(hosts):
                    del counts[gone]
        # The client's KERNEL_REMOTE_HOST would pick a host: the pool decides alone.
        env_dict.pop("KERNEL_REMOTE_HOST", None)
        return super()._determine_next_host(env_dict)
