"""The ``model.py`` files of a Triton repository's Python-backend models, copied into it as they stand.

They run inside Triton's Python backend, in the server's environment (numpy<2, onnxruntime, pillow; no torch, no
carafe_deploy): they import only numpy, onnxruntime, PIL, ``triton_python_backend_utils`` and ``carafe_imaging`` (a
copy of :mod:`carafe_deploy.imaging` placed beside them). Nothing here is imported by the package.
"""
