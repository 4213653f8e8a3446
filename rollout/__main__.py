from rollout.cli import app

app()
