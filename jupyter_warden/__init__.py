"""jupyter-warden: make one Jupyter server safe to share.

This module only names the package's version, its Jupyter Server
extension point and its prebuilt JupyterLab extension (built from src/
into labextension/); everything else lives in the subpackages.
"""

__version__ = "0.1.0"


def _jupyter_server_extension_points():
    from .app import Warden

    return [{"module": "jupyter_warden.app", "app": Warden}]


def _jupyter_labextension_paths():
    # `jupyter labextension develop` links share/jupyter/labextensions/jupyter-warden here.
    return [{"src": "labextension", "dest": "jupyter-warden"}]
