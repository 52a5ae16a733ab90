from zenthor.migrate import run_env

run_env()
