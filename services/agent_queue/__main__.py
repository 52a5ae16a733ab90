"""`python -m services.agent_queue`: run the agent_queue gRPC service."""

from services.agent_queue.app import build_server
from zenthor.config import ServiceName
from zenthor.process import run_service_process

if __name__ == "__main__":
    run_service_process(ServiceName.AGENT_QUEUE, build_server)
