"""The web app behind ``facelab serve``: REST API (OpenAPI at ``/docs``) and server-rendered pages.

Modules: :mod:`~facelab.server.app` (the FastAPI factory ``create_app``), :mod:`~facelab.server.api`
(JSON endpoints), :mod:`~facelab.server.pages` (HTML pages), :mod:`~facelab.server.jobs` (training
in a background thread), :mod:`~facelab.server.security` (token, host and path checks),
:mod:`~facelab.server.workspace_ops` (uploads, manual faces) and
:mod:`~facelab.server.recognition` (recognize and verify uploaded images).

Importing this package imports neither FastAPI nor any model: ``facelab --help`` stays instant.
"""
