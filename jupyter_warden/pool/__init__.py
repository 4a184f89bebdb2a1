"""Kernels on a pool of hosts, through Jupyter Enterprise Gateway (docs/pool.md).

``launch_token`` signs who a kernel runs as; ``warden`` is the server's side
(the launch request, max age); ``host`` is the launcher run on each pool host;
``gateway`` is the Enterprise Gateway process proxy that reads its host list
from a file. This module imports nothing, so ``gateway`` loads inside EG's own
environment with only this package on its path.
"""
