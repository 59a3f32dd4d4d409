"""The AttriVAE session in a web browser: ``attrivae view`` (trame + trame-slicer).

The same :class:`~AttriVAELib.slicer.session.AttriVAESession` the Slicer module uses runs on a
trame-slicer MRML scene; the server renders the slice views and streams them to the page.
Nothing here copies the session's logic: the page's buttons start the session's tasks and
show their results. One job per module:

* :mod:`~AttriVAELib.web.app`: the pieces assembled (:class:`~AttriVAELib.web.app.AttriVAEWebApp`);
* :mod:`~AttriVAELib.web.server`: starting the server (loopback by default);
* :mod:`~AttriVAELib.web.layout`: the page;
* :mod:`~AttriVAELib.web.controller`, :mod:`~AttriVAELib.web.explore`: the page's actions
  bound to the session (state binding);
* :mod:`~AttriVAELib.web.runner`: the session's tasks polled from the server's event loop;
* :mod:`~AttriVAELib.web.state`: the page's values, messages and the one-user rule;
* :mod:`~AttriVAELib.web.views`: the six slice views;
* :mod:`~AttriVAELib.web.files`: which files the page may open, and uploads.

Needs the ``web`` extra (``pip install 'attrivae[web]'``). Importing this package imports
neither trame nor ``slicer``/``vtk``/torch; :mod:`~AttriVAELib.web.files`,
:mod:`~AttriVAELib.web.state` and :mod:`~AttriVAELib.web.server` import without them too.
"""

from __future__ import annotations

__all__: list[str] = []
