"""Test doubles shipped with Orchestra, for your tests and ours.

`FunctionBackend` answers every call from one function (no HTTP); `StubProvider` is a real
OpenAI-compatible HTTP server on 127.0.0.1 that plays a healthy or faulty provider.
"""

from orchestra.testing.function_backend import Call, FunctionBackend
from orchestra.testing.stub_provider import Behaviour, Served, StubProvider, refused_url

__all__ = ["Behaviour", "Call", "FunctionBackend", "Served", "StubProvider", "refused_url"]
