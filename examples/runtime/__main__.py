"""`python -m examples.runtime`: the job loop and (unless ENABLE_WHATSAPP=false) the WhatsApp
egress loop, until SIGTERM or Ctrl-C: then it stops claiming, lets running jobs finish within
the grace, releases the WhatsApp lease and exits 0."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from examples.runtime.config import Config
from examples.runtime.jobs import JobLoop
from examples.runtime.responder import build_responder
from examples.runtime.stubs import Stubs
from examples.runtime.whatsapp import Egress, Sink

log = logging.getLogger("runtime")


async def run(config: Config) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    stubs = Stubs.connect(config)
    responder = build_responder(config.model_url, config.model_name, config.model_api_key, config.chunk_delay_s)
    log.info("runtime %s up (responder %s, whatsapp %s)", config.worker_id, responder.model,
             config.account_id if config.whatsapp else "off")
    loops = [JobLoop(config, stubs, responder).run(stopping)]
    if config.whatsapp:
        loops.append(Egress(config, stubs, Sink(config.sink_path, config.worker_id)).run(stopping))
    try:
        await asyncio.gather(*loops)
    finally:
        await stubs.close()
    log.info("runtime %s stopped", config.worker_id)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stdout)
    asyncio.run(run(Config.from_env()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
