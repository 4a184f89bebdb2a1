"""jupyter-warden: make one Jupyter server safe to share.

This module only names the package's version and its Jupyter Server
extension point; everything else lives in the subpackages.
"""

__version__ = "0.1.0"


def _jupyter_server_extension_points():
    from .app import Warden

    return [{"module": "jupyter_warden.app", "app": Warden}]
