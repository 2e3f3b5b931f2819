"""Device code: CUDA C++ sources (run through CuPy) and Triton kernels.

Installed as ``llmprobe.kernels`` (see pyproject.toml) so launchers find it in a wheel and in an
editable install alike. Importing this package imports neither triton nor cupy.
"""
