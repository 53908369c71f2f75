"""Test helpers shipped with Orchestra: a stub OpenAI-compatible provider, healthy or faulty."""

from orchestra.testing.stub_provider import Behaviour, StubProvider, refused_url

__all__ = ["Behaviour", "StubProvider", "refused_url"]
