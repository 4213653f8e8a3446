from training.cli import app

app()
