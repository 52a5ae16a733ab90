"""`python -m services.messages`: run the messages gRPC service."""

from services.messages.app import build_server
from zenthor.config import ServiceName
from zenthor.process import run_service_process

if __name__ == "__main__":
    run_service_process(ServiceName.MESSAGES, build_server)
