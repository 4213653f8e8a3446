from monitoring.cli import app

app()
