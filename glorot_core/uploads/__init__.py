"""Uploaded models and probe data: formats, safety checks, loading and probe-point discovery.

Torch and numpy only; nothing of the service. The service streams a file to disk, then asks
:func:`glorot_core.uploads.inspect.inspect_in_child` what it is: the checks, the loading and the
probe-point listing run in a child process with memory and time limits, and the answer is either a
:class:`~glorot_core.uploads.inspect.ModelInfo` or an :class:`~glorot_core.uploads.errors.UploadRefused`
carrying the HTTP status and the problem the API answers with.

Modules: ``errors`` (the refusal), ``metadata`` (what the uploader declares), ``architecture`` (MLP and
CNN descriptions → ``nn.Sequential``), ``archive`` (zip and pickle safety), ``loaders`` (one per
format), ``probe_points`` (where the instruments can look), ``inspect`` (the whole check, in-process
or in a child), ``probe_data`` (``.npz`` inputs and the random/tokens data descriptions),
``segments`` (graph pieces between probe points as functions) and ``jacobians`` (their per-example
Jacobian spectra, exact or matrix-free).
docs/uploads.md explains the formats and why each check exists.
"""
