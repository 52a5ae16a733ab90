"""The ops tests reuse the real servers the service tests start (agent_queue needs identity)."""

from tests.service.agent_queue.conftest import agent_queue_factory, clock  # noqa: F401  (fixtures)
from tests.service.conftest import identity  # noqa: F401  (fixture)
